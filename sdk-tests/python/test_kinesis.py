"""Rivulet through boto3 and the AWS CLI (HTTP/1.1, JSON), SubscribeToShard included.

RIVULET_ENDPOINT (http://host:port) names a running server with zero lifecycle delays.
RIVULET_ENDPOINTS (comma-separated), when set, names every node of a cluster: each request
then goes to the next node in turn.
"""

import datetime
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.parse

import boto3
import pytest
from botocore.config import Config

ENDPOINTS = os.environ.get("RIVULET_ENDPOINTS", os.environ["RIVULET_ENDPOINT"]).split(",")
_turn = itertools.cycle(ENDPOINTS)


def endpoint():
    """The next node's endpoint (the one endpoint, without a cluster)."""
    return next(_turn)


def spread(client):
    """Sends each of `client`'s requests to the next node in turn (before it is signed, so
    the signature names the node it goes to)."""
    if len(ENDPOINTS) > 1:
        def rotate(request, **_):
            target = urllib.parse.urlsplit(endpoint())
            url = urllib.parse.urlsplit(request.url)
            request.url = urllib.parse.urlunsplit(url._replace(netloc=target.netloc))

        client.meta.events.register("before-sign.kinesis", rotate)
    return client


ENDPOINT = ENDPOINTS[0]
ENV = dict(
    os.environ,
    AWS_ACCESS_KEY_ID="AKIDPY",
    AWS_SECRET_ACCESS_KEY="secret",
    AWS_DEFAULT_REGION="us-east-1",
)


@pytest.fixture(scope="module")
def kinesis():
    return spread(boto3.client(
        "kinesis",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="AKIDPY",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    ))


def unique(name):
    return f"{name}-{os.getpid()}-{time.time_ns()}"


def create(kinesis, name, shards):
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    return kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]


def read_shard(kinesis, stream, shard_id):
    it = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records, children = [], []
    while it:
        page = kinesis.get_records(ShardIterator=it)
        records += page["Records"]
        children = page.get("ChildShards", [])
        if not page["Records"] and page["MillisBehindLatest"] == 0 and not children:
            break
        it = page.get("NextShardIterator")
    return records, children


def test_produce_consume_and_errors(kinesis):
    name = unique("py")
    create(kinesis, name, 2)
    put = kinesis.put_record(StreamName=name, PartitionKey="a", Data=b"hello")
    assert put["SequenceNumber"].isdigit() and len(put["SequenceNumber"]) > 50
    batch = kinesis.put_records(
        StreamName=name,
        Records=[{"PartitionKey": f"k{i}", "Data": f"r{i}".encode()} for i in range(100)],
    )
    assert batch["FailedRecordCount"] == 0
    shards = kinesis.list_shards(StreamName=name)["Shards"]
    assert [s["ShardId"] for s in shards] == ["shardId-000000000000", "shardId-000000000001"]
    seen = []
    for shard in shards:
        records, _ = read_shard(kinesis, name, shard["ShardId"])
        seen += [r["Data"] for r in records]
        for r in records:
            assert abs(r["ApproximateArrivalTimestamp"].timestamp() - time.time()) < 60
    assert sorted(seen) == sorted([b"hello"] + [f"r{i}".encode() for i in range(100)])

    with pytest.raises(kinesis.exceptions.ResourceNotFoundException) as missing:
        kinesis.describe_stream(StreamName="no-such-stream")
    assert (
        missing.value.response["Error"]["Message"]
        == "Stream no-such-stream under account 000000000000 not found."
    )
    with pytest.raises(kinesis.exceptions.InvalidArgumentException) as bad:
        kinesis.get_shard_iterator(
            StreamName=name, ShardId="shardId-000000000000", ShardIteratorType="AT_SEQUENCE_NUMBER"
        )
    assert bad.value.response["Error"]["Message"].startswith("Must either specify (1)")
    kinesis.delete_stream(StreamName=name)


def test_subscribe_to_shard_over_http_1_1(kinesis):
    name = unique("py-efo")
    summary = create(kinesis, name, 1)
    consumer = kinesis.register_stream_consumer(
        StreamARN=summary["StreamARN"], ConsumerName="py"
    )["Consumer"]
    for _ in range(100):
        status = kinesis.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])[
            "ConsumerDescription"
        ]["ConsumerStatus"]
        if status == "ACTIVE":
            break
        time.sleep(0.1)
    first = kinesis.put_record(StreamName=name, PartitionKey="p", Data=b"early")
    response = kinesis.subscribe_to_shard(
        ConsumerARN=consumer["ConsumerARN"],
        ShardId="shardId-000000000000",
        StartingPosition={"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": first["SequenceNumber"]},
    )
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.subscribe_to_shard(
            ConsumerARN=consumer["ConsumerARN"],
            ShardId="shardId-000000000000",
            StartingPosition={"Type": "LATEST"},
        )
    seen, continuation, put_later = [], None, True
    for event in response["EventStream"]:
        shard_event = event.get("SubscribeToShardEvent")
        if shard_event is None:
            continue
        seen += [r["Data"] for r in shard_event["Records"]]
        continuation = shard_event["ContinuationSequenceNumber"]
        if put_later:
            put_later = False
            kinesis.put_record(StreamName=name, PartitionKey="p", Data=b"late")
        if len(seen) >= 2:
            break
    response["EventStream"].close()
    assert seen == [b"early", b"late"]
    assert continuation.isdigit()
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


def test_reshard_while_reading(kinesis):
    name = unique("py-merge")
    create(kinesis, name, 2)
    for i in range(30):
        kinesis.put_record(StreamName=name, PartitionKey=f"k{i}", Data=f"{i}".encode())
    kinesis.merge_shards(
        StreamName=name,
        ShardToMerge="shardId-000000000000",
        AdjacentShardToMerge="shardId-000000000001",
    )
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    for i in range(30, 40):
        kinesis.put_record(StreamName=name, PartitionKey=f"k{i}", Data=f"{i}".encode())
    before = 0
    for parent in ["shardId-000000000000", "shardId-000000000001"]:
        records, children = read_shard(kinesis, name, parent)
        before += len(records)
        assert [c["ShardId"] for c in children] == ["shardId-000000000002"]
        assert children[0]["ParentShards"] == ["shardId-000000000000", "shardId-000000000001"]
    after, _ = read_shard(kinesis, name, "shardId-000000000002")
    assert before == 30 and len(after) == 10
    kinesis.delete_stream(StreamName=name)


def aws(*args):
    """Runs the AWS CLI against Rivulet and returns its JSON output."""
    out = subprocess.run(
        [sys.executable, "-m", "awscli", "kinesis", "--endpoint-url", endpoint(), *args],
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout) if out.stdout.strip() else None


def test_aws_cli():
    name = unique("cli")
    aws("create-stream", "--stream-name", name, "--shard-count", "1")
    subprocess.run(
        [sys.executable, "-m", "awscli", "kinesis", "wait", "stream-exists",
         "--endpoint-url", endpoint(), "--stream-name", name],
        env=ENV,
        check=True,
    )
    assert name in aws("list-streams")["StreamNames"]
    # AWS CLI v1 sends a blob argument's text as the bytes (v2 would expect base64).
    put = aws("put-record", "--stream-name", name, "--partition-key", "k", "--data", "hello")
    assert put["ShardId"] == "shardId-000000000000"
    it = aws("get-shard-iterator", "--stream-name", name, "--shard-id", "shardId-000000000000",
             "--shard-iterator-type", "TRIM_HORIZON")["ShardIterator"]
    records = aws("get-records", "--shard-iterator", it)["Records"]
    assert [r["Data"] for r in records] == ["aGVsbG8="]
    failed = subprocess.run(
        [sys.executable, "-m", "awscli", "kinesis", "--endpoint-url", endpoint(),
         "describe-stream", "--stream-name", "no-such-stream"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0
    assert "ResourceNotFoundException" in failed.stderr
    assert "Stream no-such-stream under account 000000000000 not found." in failed.stderr
    aws("delete-stream", "--stream-name", name)


def test_readme_quick_start_reads_back_its_record():
    """The README's quick start, run as written (but for the server it starts, the placeholder
    credentials this signed server would refuse, and the stream's name): the record it puts is
    the record it reads."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    block = readme.split("## Quick start with the AWS CLI", 1)[1].split("```sh\n", 1)[1]
    block = block.split("```", 1)[0]
    lines = [line for line in block.splitlines()
             if not line.startswith(("cargo run", "export AWS_"))]
    script = "\n".join(lines).replace("http://127.0.0.1:4567", endpoint())
    script = script.replace("demo", unique("demo"))
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c",
         f'aws() {{ "{sys.executable}" -m awscli "$@"; }}\n{script}'],
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    records = json.loads(out.stdout)["Records"]
    assert len(records) == 1, out.stdout
    assert records[0]["PartitionKey"] == "user-1"


def test_permissions_through_boto3_and_the_cli(kinesis):
    """A read-only principal reads but is refused writes with AWS's AccessDeniedException."""
    name = unique("guarded")
    arn = create(kinesis, name, 1)["StreamARN"]
    readonly = spread(boto3.client(
        "kinesis",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="AKIDREADONLY",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    ))
    assert readonly.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "StreamARN"
    ] == arn
    with pytest.raises(readonly.exceptions.ClientError) as refused:
        readonly.put_record(StreamName=name, Data=b"x", PartitionKey="k")
    error = refused.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert error["Message"] == (
        "User: arn:aws:iam::000000000000:user/readonly is not authorized to perform: "
        f"kinesis:PutRecord on resource: {arn} because no identity-based policy allows "
        "the kinesis:PutRecord action"
    )
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    # Resource policies through the CLI: none is "{}", one put is read back as given.
    def cli(*args, key="AKIDPY"):
        env = dict(ENV, AWS_ACCESS_KEY_ID=key)
        return subprocess.run(
            [sys.executable, "-m", "awscli", "kinesis", *args, "--endpoint-url", endpoint()],
            env=env,
            capture_output=True,
            text=True,
        )

    got = cli("get-resource-policy", "--resource-arn", arn)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["Policy"] == "{}"
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::000000000000:user/readonly"},
                    "Action": "kinesis:PutRecord",
                    "Resource": arn,
                }
            ],
        }
    )
    put = cli("put-resource-policy", "--resource-arn", arn, "--policy", policy)
    assert put.returncode == 0, put.stderr
    assert json.loads(cli("get-resource-policy", "--resource-arn", arn).stdout)["Policy"] == policy
    # The stream's policy now lets the read-only user write to it (same account).
    readonly.put_record(StreamName=name, Data=b"x", PartitionKey="k")
    denied = cli(
        "delete-stream", "--stream-name", name, key="AKIDREADONLY"
    )
    assert denied.returncode != 0
    assert "AccessDeniedException" in denied.stderr


def test_encryption_at_rest_through_boto3(kinesis):
    """StartStreamEncryption, records that report KMS, and KMS's not-found exception."""
    name = unique("encrypted")
    create(kinesis, name, 1)
    with pytest.raises(kinesis.exceptions.KMSNotFoundException):
        kinesis.start_stream_encryption(
            StreamName=name, EncryptionType="KMS", KeyId="alias/does-not-exist"
        )
    kinesis.start_stream_encryption(
        StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis"
    )
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert (summary["EncryptionType"], summary["KeyId"]) == ("KMS", "alias/aws/kinesis")
    put = kinesis.put_record(StreamName=name, Data=b"secret", PartitionKey="k")
    assert put["EncryptionType"] == "KMS"
    records, _ = read_shard(kinesis, name, "shardId-000000000000")
    assert [(r["Data"], r["EncryptionType"]) for r in records] == [(b"secret", "KMS")]


# Queues: on ON_DEMAND streams only. A new queue answers CREATING and is ACTIVE on a later look
# (poll, as cluster nodes may answer in turn). The five control operations share the account's
# 5 calls per second per operation, so `control` waits out "Rate exceeded" and nothing else.


def control(call, **kwargs):
    """`call(**kwargs)`, retried while the account's control-plane call rate is exceeded."""
    for _ in range(50):
        try:
            return call(**kwargs)
        except call.__self__.exceptions.LimitExceededException as error:
            if not error.response["Error"]["Message"].startswith("Rate exceeded"):
                raise
            time.sleep(0.2)
    return call(**kwargs)


def on_demand(kinesis, name):
    """Creates an ON_DEMAND stream, waits for it and returns its summary."""
    kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    return kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]


def queue_status(kinesis, arn, status):
    """Polls DescribeQueue until the queue is in `status`; returns its description."""
    for _ in range(50):
        queue = control(kinesis.describe_queue, QueueARN=arn)["QueueDescription"]
        if queue["QueueStatus"] == status:
            return queue
        time.sleep(0.1)
    raise AssertionError(f"queue {arn} is still {queue['QueueStatus']}, not {status}")


def new_queue(kinesis, stream_arn, name, start="LATEST", **create):
    """Creates a queue on `stream_arn` from `start`, waits until it is ACTIVE and returns its
    ARN."""
    created = control(
        kinesis.create_queue,
        QueueName=name,
        StreamConfigurationList=[{"StreamARN": stream_arn, "StartingPosition": {"Type": start}}],
        **create,
    )["QueueDescription"]
    assert created["QueueStatus"] == "CREATING"
    return queue_status(kinesis, created["QueueARN"], "ACTIVE")["QueueARN"]


def receive(kinesis, arn, count, dead=False, **kwargs):
    """Receives from `arn` until `count` records came back (a receive may return fewer than it
    could); fails after 10 s."""
    call = kinesis.receive_dead_letter_queue_records if dead else kinesis.receive_queue_records
    records, deadline = [], time.monotonic() + 10
    while len(records) < count and time.monotonic() < deadline:
        records += call(QueueARN=arn, WaitTimeSeconds=1, **kwargs)["QueueRecords"]
    assert len(records) == count, records
    return records


def handles(records):
    return [{"ReceiptHandle": r["ReceiptHandle"]} for r in records]


def gone(kinesis, arn):
    """Polls DescribeQueue until the queue is gone (ResourceNotFoundException)."""
    for _ in range(50):
        try:
            control(kinesis.describe_queue, QueueARN=arn)
        except kinesis.exceptions.ResourceNotFoundException:
            return
        time.sleep(0.1)
    raise AssertionError(f"queue {arn} was not deleted")


def delete_queues(kinesis, *arns):
    for arn in arns:
        control(kinesis.delete_queue, QueueARN=arn)
    for arn in arns:
        gone(kinesis, arn)


def test_queue_lifecycle_and_what_it_does_to_its_stream(kinesis):
    """Create (defaults, CREATING then ACTIVE), QueueCount, Update (UPDATING then ACTIVE,
    unspecified attributes unchanged), the stream operations a queue refuses, Delete (DELETING,
    then gone)."""
    name = unique("py-queue")
    stream = on_demand(kinesis, name)
    assert stream["QueueCount"] == 0
    created = control(
        kinesis.create_queue,
        QueueName=name,
        StreamConfigurationList=[{"StreamARN": stream["StreamARN"]}],
    )["QueueDescription"]
    arn = created["QueueARN"]
    assert arn.startswith("arn:aws:kinesis:us-east-1:000000000000:queue/")
    assert name not in arn  # the id is generated, not derived from the name
    assert created["QueueName"] == name
    assert created["QueueStatus"] == "CREATING"
    assert abs(created["QueueCreationTimestamp"].timestamp() - time.time()) < 60
    assert created["StreamConfigurationList"] == [
        {"StreamARN": stream["StreamARN"], "StartingPosition": {"Type": "LATEST"}}
    ]
    assert created["QueueAttributes"] == {
        "VisibilityTimeoutSeconds": 30,
        "DeadLetterConfiguration": {"TargetType": "BUILT_IN", "MaxReceiveCount": 6},
    }
    active = queue_status(kinesis, arn, "ACTIVE")
    assert (active["QueueName"], active["QueueAttributes"]) == (name, created["QueueAttributes"])
    assert active["QueueCreationTimestamp"] == created["QueueCreationTimestamp"]
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert (summary["QueueCount"], summary["ConsumerCount"]) == (1, 0)

    updated = control(
        kinesis.update_queue, QueueARN=arn, QueueAttributes={"VisibilityTimeoutSeconds": 5}
    )["QueueDescription"]
    assert updated["QueueStatus"] == "UPDATING"
    active = queue_status(kinesis, arn, "ACTIVE")
    assert active["QueueAttributes"] == {
        "VisibilityTimeoutSeconds": 5,
        "DeadLetterConfiguration": {"TargetType": "BUILT_IN", "MaxReceiveCount": 6},
    }
    control(
        kinesis.update_queue,
        QueueARN=arn,
        QueueAttributes={"DeadLetterConfiguration": {"TargetType": "NONE"}},
    )
    active = queue_status(kinesis, arn, "ACTIVE")
    assert active["QueueAttributes"]["VisibilityTimeoutSeconds"] == 5
    assert active["QueueAttributes"]["DeadLetterConfiguration"]["TargetType"] == "NONE"

    # A stream with a queue can be neither deleted (whatever EnforceConsumerDeletion says) nor
    # switched to PROVISIONED.
    for enforce in (False, True):
        with pytest.raises(kinesis.exceptions.ResourceInUseException) as in_use:
            kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=enforce)
        assert "queues" in in_use.value.response["Error"]["Message"]
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        kinesis.update_stream_mode(
            StreamARN=stream["StreamARN"], StreamModeDetails={"StreamMode": "PROVISIONED"}
        )
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "StreamModeDetails"
    ] == {"StreamMode": "ON_DEMAND"}

    assert control(kinesis.delete_queue, QueueARN=arn)["ResponseMetadata"]["HTTPStatusCode"] == 200
    try:
        status = control(kinesis.describe_queue, QueueARN=arn)["QueueDescription"]["QueueStatus"]
        assert status == "DELETING"
    except kinesis.exceptions.ResourceNotFoundException:
        pass  # already gone: another node may have finished the deletion
    gone(kinesis, arn)
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.receive_queue_records(QueueARN=arn, WaitTimeSeconds=1)
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "QueueCount"
    ] == 0
    kinesis.delete_stream(StreamName=name)


def test_queue_listing_sorts_filters_and_pages(kinesis):
    """ListQueues: sorted by name, StreamFilter (with or without the stream's creation time),
    MaxResults and NextToken, and boto3's paginator."""
    name = unique("py-list")
    first = on_demand(kinesis, name + "-1")
    second = on_demand(kinesis, name + "-2")
    arns = {}
    for queue, stream in [("c", first), ("a", first), ("b", first), ("d", second)]:
        arns[queue] = new_queue(kinesis, stream["StreamARN"], f"{name}-{queue}")
    mine = [{"StreamARN": first["StreamARN"]}]
    page = control(kinesis.list_queues, StreamFilter=mine, MaxResults=2)
    assert [q["QueueName"] for q in page["QueueSummaries"]] == [f"{name}-a", f"{name}-b"]
    rest = control(
        kinesis.list_queues, StreamFilter=mine, MaxResults=2, NextToken=page["NextToken"]
    )
    assert [q["QueueName"] for q in rest["QueueSummaries"]] == [f"{name}-c"]
    assert "NextToken" not in rest
    summary = page["QueueSummaries"][0]
    assert summary["QueueARN"] == arns["a"]
    assert summary["QueueStatus"] == "ACTIVE"
    assert abs(summary["QueueCreationTimestamp"].timestamp() - time.time()) < 60
    assert summary["Streams"] == [
        {
            "StreamARN": first["StreamARN"],
            "StreamCreationTimestamp": first["StreamCreationTimestamp"],
        }
    ]
    # The stream's creation time narrows the filter: the right one matches, another does not.
    exact = [dict(mine[0], StreamCreationTimestamp=first["StreamCreationTimestamp"])]
    assert len(control(kinesis.list_queues, StreamFilter=exact)["QueueSummaries"]) == 3
    other = [dict(mine[0], StreamCreationTimestamp=first["StreamCreationTimestamp"].replace(
        year=first["StreamCreationTimestamp"].year - 1))]
    assert control(kinesis.list_queues, StreamFilter=other)["QueueSummaries"] == []
    theirs = control(kinesis.list_queues, StreamFilter=[{"StreamARN": second["StreamARN"]}])
    assert [q["QueueARN"] for q in theirs["QueueSummaries"]] == [arns["d"]]
    # Unfiltered, page by page (one name each): every queue of the account, in name order.
    names = []
    for page in kinesis.get_paginator("list_queues").paginate(
        PaginationConfig={"PageSize": 3}
    ):
        assert len(page["QueueSummaries"]) <= 3
        names += [q["QueueName"] for q in page["QueueSummaries"]]
        time.sleep(0.2)  # the account's ListQueues rate
    assert names == sorted(names)
    assert [n for n in names if n.startswith(name + "-")] == [
        f"{name}-{q}" for q in "abcd"
    ]
    delete_queues(kinesis, *arns.values())
    assert control(kinesis.list_queues, StreamFilter=mine)["QueueSummaries"] == []
    kinesis.delete_stream(StreamName=name + "-1")
    kinesis.delete_stream(StreamName=name + "-2")


def test_queue_creation_errors(kinesis):
    """CreateQueue's refusals: capacity mode, starting positions, dead-letter settings, a
    duplicate name, an unknown stream, and the limit of 20 consumers and queues per stream."""
    name = unique("py-qerr")
    stream = on_demand(kinesis, name)
    arn = stream["StreamARN"]
    provisioned = create(kinesis, name + "-prov", 1)["StreamARN"]

    def refused(exception, message, stream_arn=arn, start=None, **create):
        configuration = {"StreamARN": stream_arn}
        if start is not None:
            configuration["StartingPosition"] = start
        with pytest.raises(exception) as error:
            control(
                kinesis.create_queue,
                QueueName=name + "-refused",
                StreamConfigurationList=[configuration],
                **create,
            )
        assert message in error.value.response["Error"]["Message"]

    validation = kinesis.exceptions.ValidationException
    refused(validation, "ON_DEMAND", stream_arn=provisioned)
    now = datetime.datetime.now(datetime.timezone.utc)
    refused(validation, "Timestamp", start={"Type": "LATEST", "Timestamp": now})
    refused(validation, "Timestamp", start={"Type": "TRIM_HORIZON", "Timestamp": now})
    refused(validation, "Timestamp", start={"Type": "AT_TIMESTAMP"})
    refused(
        validation,
        "MaxReceiveCount",
        QueueAttributes={"DeadLetterConfiguration": {"TargetType": "BUILT_IN"}},
    )
    refused(
        kinesis.exceptions.ResourceNotFoundException,
        "not found",
        stream_arn=arn.replace(name, name + "-missing"),
    )
    # Queue names are unique in the account, whichever stream they read.
    queues = [new_queue(kinesis, arn, name)]
    other = on_demand(kinesis, name + "-other")
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        control(
            kinesis.create_queue,
            QueueName=name,
            StreamConfigurationList=[{"StreamARN": other["StreamARN"]}],
        )

    # Queues and enhanced fan-out consumers share the stream's 20.
    for i in range(9):
        control(kinesis.register_stream_consumer, StreamARN=arn, ConsumerName=f"c{i}")
    for i in range(10):
        created = control(
            kinesis.create_queue,
            QueueName=f"{name}-{i}",
            StreamConfigurationList=[{"StreamARN": arn}],
        )
        queues.append(created["QueueDescription"]["QueueARN"])
    with pytest.raises(kinesis.exceptions.LimitExceededException) as limit:
        control(
            kinesis.create_queue,
            QueueName=name + "-21",
            StreamConfigurationList=[{"StreamARN": arn}],
        )
    assert "limit of 20" in limit.value.response["Error"]["Message"]
    with pytest.raises(kinesis.exceptions.LimitExceededException) as limit:
        control(kinesis.register_stream_consumer, StreamARN=arn, ConsumerName="c21")
    assert "limit of 20" in limit.value.response["Error"]["Message"]
    summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    assert (summary["QueueCount"], summary["ConsumerCount"]) == (11, 9)
    delete_queues(kinesis, *queues)
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    kinesis.delete_stream(StreamName=name + "-other")
    kinesis.delete_stream(StreamName=name + "-prov")
