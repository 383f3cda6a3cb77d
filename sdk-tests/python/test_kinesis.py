"""Rivulet through boto3 and the AWS CLI (HTTP/1.1, JSON), SubscribeToShard and queues included.

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
import threading
import time
import urllib.parse

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

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


@pytest.fixture(scope="module")
def client():
    """boto3 that never retries (the `kinesis` fixture retries a LimitExceededException once,
    after a random back-off): `control` waits out the call rate itself, and an expected
    LimitExceededException comes back at once."""
    return spread(boto3.client(
        "kinesis",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="AKIDPY",
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1}),
    ))


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


def eventually(check, seconds=5):
    """`check()` once it passes: in cluster mode the node asked may not have seen a change
    another node made a moment ago."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (AssertionError, ClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def on_demand(kinesis, name):
    """Creates an ON_DEMAND stream, waits for it and returns its summary."""
    control(kinesis.create_stream, StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    return kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]


def queue_status(kinesis, arn, status, until=lambda queue: True):
    """Polls DescribeQueue until the queue is in `status` (and `until(description)` holds);
    returns its description."""
    for _ in range(50):
        queue = control(kinesis.describe_queue, QueueARN=arn)["QueueDescription"]
        if queue["QueueStatus"] == status and until(queue):
            return queue
        time.sleep(0.1)
    raise AssertionError(f"queue {arn} is not {status} as expected: {queue}")


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


def queue_count(kinesis, stream, count):
    """Polls DescribeStreamSummary until `stream` counts `count` queues."""
    for _ in range(50):
        summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        if summary["QueueCount"] == count:
            return summary
        time.sleep(0.1)
    raise AssertionError(f"{stream} counts {summary['QueueCount']} queues, not {count}")


def drop(kinesis, stream, queues, **delete):
    """Deletes `queues` (all the queues of `stream`), waits until the stream counts none, then
    deletes the stream."""
    for arn in queues:
        control(kinesis.delete_queue, QueueARN=arn)
    queue_count(kinesis, stream, 0)
    eventually(lambda: kinesis.delete_stream(StreamName=stream, **delete))


def test_queue_lifecycle_and_what_it_does_to_its_stream(client):
    """Create (defaults, CREATING then ACTIVE), QueueCount, Update (UPDATING then ACTIVE,
    unspecified attributes unchanged), the stream operations a queue refuses, Delete (DELETING,
    then gone)."""
    name = unique("py-queue")
    stream = on_demand(client, name)
    assert stream["QueueCount"] == 0
    created = control(
        client.create_queue,
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
    active = queue_status(client, arn, "ACTIVE")
    assert (active["QueueName"], active["QueueAttributes"]) == (name, created["QueueAttributes"])
    assert active["QueueCreationTimestamp"] == created["QueueCreationTimestamp"]
    assert queue_count(client, name, 1)["ConsumerCount"] == 0

    updated = control(
        client.update_queue, QueueARN=arn, QueueAttributes={"VisibilityTimeoutSeconds": 5}
    )["QueueDescription"]
    assert updated["QueueStatus"] == "UPDATING"
    # (Until the new visibility shows: another node may not have seen the update yet.)
    active = queue_status(
        client, arn, "ACTIVE", lambda q: q["QueueAttributes"]["VisibilityTimeoutSeconds"] == 5
    )
    assert active["QueueAttributes"] == {
        "VisibilityTimeoutSeconds": 5,
        "DeadLetterConfiguration": {"TargetType": "BUILT_IN", "MaxReceiveCount": 6},
    }
    updated = control(
        client.update_queue,
        QueueARN=arn,
        QueueAttributes={"DeadLetterConfiguration": {"TargetType": "NONE"}},
    )["QueueDescription"]
    assert updated["QueueStatus"] == "UPDATING"
    active = queue_status(
        client,
        arn,
        "ACTIVE",
        lambda q: q["QueueAttributes"]["DeadLetterConfiguration"]["TargetType"] == "NONE",
    )
    assert active["QueueAttributes"]["VisibilityTimeoutSeconds"] == 5

    # A stream with a queue can be neither deleted (whatever EnforceConsumerDeletion says) nor
    # switched to PROVISIONED.
    for enforce in (False, True):
        with pytest.raises(client.exceptions.ResourceInUseException) as in_use:
            client.delete_stream(StreamName=name, EnforceConsumerDeletion=enforce)
        assert "queues" in in_use.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ResourceInUseException):
        client.update_stream_mode(
            StreamARN=stream["StreamARN"], StreamModeDetails={"StreamMode": "PROVISIONED"}
        )
    assert client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "StreamModeDetails"
    ] == {"StreamMode": "ON_DEMAND"}

    assert control(client.delete_queue, QueueARN=arn)["ResponseMetadata"]["HTTPStatusCode"] == 200
    try:
        status = control(client.describe_queue, QueueARN=arn)["QueueDescription"]["QueueStatus"]
        assert status == "DELETING"
    except client.exceptions.ResourceNotFoundException:
        pass  # already gone: another node may have finished the deletion
    gone(client, arn)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.receive_queue_records(QueueARN=arn, WaitTimeSeconds=1)
    drop(client, name, [])


def test_queue_listing_sorts_filters_and_pages(client):
    """ListQueues: sorted by name, StreamFilter (with or without the stream's creation time),
    MaxResults and NextToken, and boto3's paginator."""
    name = unique("py-list")
    first = on_demand(client, name + "-1")
    second = on_demand(client, name + "-2")
    arns = {}
    for queue, stream in [("c", first), ("a", first), ("b", first), ("d", second)]:
        arns[queue] = new_queue(client, stream["StreamARN"], f"{name}-{queue}")
    mine = [{"StreamARN": first["StreamARN"]}]

    def listed(filters, *queues):
        def check():
            summaries = control(client.list_queues, StreamFilter=filters)["QueueSummaries"]
            assert [q["QueueName"] for q in summaries] == [f"{name}-{q}" for q in queues]
            return summaries

        return eventually(check)

    listed(mine, "a", "b", "c")

    def two_pages():
        page = control(client.list_queues, StreamFilter=mine, MaxResults=2)
        assert [q["QueueName"] for q in page["QueueSummaries"]] == [f"{name}-a", f"{name}-b"]
        rest = control(
            client.list_queues, StreamFilter=mine, MaxResults=2, NextToken=page["NextToken"]
        )
        assert [q["QueueName"] for q in rest["QueueSummaries"]] == [f"{name}-c"]
        assert "NextToken" not in rest
        return page

    summary = eventually(two_pages)["QueueSummaries"][0]
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
    created = first["StreamCreationTimestamp"]
    listed([dict(mine[0], StreamCreationTimestamp=created)], "a", "b", "c")
    listed([dict(mine[0], StreamCreationTimestamp=created - datetime.timedelta(days=1))])
    theirs = listed([{"StreamARN": second["StreamARN"]}], "d")
    assert theirs[0]["QueueARN"] == arns["d"]
    # Unfiltered: every queue of the account, in name order.
    names, token = [], {}
    while True:
        page = control(client.list_queues, MaxResults=100, **token)
        names += [q["QueueName"] for q in page["QueueSummaries"]]
        if "NextToken" not in page:
            break
        token = {"NextToken": page["NextToken"]}
    assert names == sorted(names)
    assert [n for n in names if n.startswith(name + "-")] == [f"{name}-{q}" for q in "abcd"]
    # boto3's paginator, one summary a page (this client retries "Rate exceeded").
    patient = spread(boto3.client(
        "kinesis",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="AKIDPY",
        aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "max_attempts": 10}),
    ))
    pages = list(patient.get_paginator("list_queues").paginate(
        StreamFilter=mine, PaginationConfig={"PageSize": 1}
    ))
    assert [[q["QueueName"] for q in p["QueueSummaries"]] for p in pages] == [
        [f"{name}-{q}"] for q in "abc"
    ]
    drop(client, name + "-1", [arns[q] for q in "abc"])
    drop(client, name + "-2", [arns["d"]])


def test_queue_creation_errors(client):
    """CreateQueue's refusals: capacity mode, starting positions, dead-letter settings, a
    duplicate name, an unknown stream, and the limit of 20 consumers and queues per stream."""
    name = unique("py-qerr")
    stream = on_demand(client, name)
    arn = stream["StreamARN"]
    provisioned = create(client, name + "-prov", 1)["StreamARN"]

    def refused(exception, message, stream_arn=arn, start=None, **create):
        configuration = {"StreamARN": stream_arn}
        if start is not None:
            configuration["StartingPosition"] = start
        with pytest.raises(exception) as error:
            control(
                client.create_queue,
                QueueName=name + "-refused",
                StreamConfigurationList=[configuration],
                **create,
            )
        assert message in error.value.response["Error"]["Message"]

    validation = client.exceptions.ValidationException
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
        client.exceptions.ResourceNotFoundException,
        "not found",
        stream_arn=arn.replace(name, name + "-missing"),
    )
    # Queue names are unique in the account, whichever stream they read.
    queues = [new_queue(client, arn, name)]
    other = on_demand(client, name + "-other")
    with pytest.raises(client.exceptions.ResourceInUseException):
        control(
            client.create_queue,
            QueueName=name,
            StreamConfigurationList=[{"StreamARN": other["StreamARN"]}],
        )

    # Queues and enhanced fan-out consumers share the stream's 20: 8 queues, 12 consumers
    # (interleaved, as each operation has its own call rate).
    for i in range(19):
        if i % 3:
            control(client.register_stream_consumer, StreamARN=arn, ConsumerName=f"c{i}")
        else:
            created = control(
                client.create_queue,
                QueueName=f"{name}-{i}",
                StreamConfigurationList=[{"StreamARN": arn}],
            )
            queues.append(created["QueueDescription"]["QueueARN"])
    with pytest.raises(client.exceptions.LimitExceededException) as limit:
        control(
            client.create_queue,
            QueueName=name + "-21",
            StreamConfigurationList=[{"StreamARN": arn}],
        )
    assert "limit of 20" in limit.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.LimitExceededException) as limit:
        control(client.register_stream_consumer, StreamARN=arn, ConsumerName="c21")
    assert "limit of 20" in limit.value.response["Error"]["Message"]
    assert queue_count(client, name, 8)["ConsumerCount"] == 12
    drop(client, name, queues, EnforceConsumerDeletion=True)
    client.delete_stream(StreamName=name + "-other")
    client.delete_stream(StreamName=name + "-prov")


def test_queue_receive_acknowledge_and_visibility(client):
    """Two TRIM_HORIZON queues on one stream: each delivers every record (RecordId = the
    SequenceNumber, the same in both), per-entry results of AcknowledgeQueueRecords and
    UpdateQueueRecordsVisibility, redelivery, and an empty answer after the wait."""
    name = unique("py-recv")
    stream = on_demand(client, name)
    puts = {
        client.put_record(StreamName=name, PartitionKey=f"k{i}", Data=f"d{i}".encode())[
            "SequenceNumber"
        ]: i
        for i in range(3)
    }
    attributes = {"QueueAttributes": {"VisibilityTimeoutSeconds": 30}}
    first = new_queue(client, stream["StreamARN"], name + "-1", "TRIM_HORIZON", **attributes)
    second = new_queue(client, stream["StreamARN"], name + "-2", "TRIM_HORIZON", **attributes)

    one = client.receive_queue_records(QueueARN=first, Limit=1, WaitTimeSeconds=5)
    assert len(one["QueueRecords"]) == 1
    records = one["QueueRecords"] + receive(client, first, 2)
    assert sorted(r["RecordId"] for r in records) == sorted(puts)
    for record in records:
        i = puts[record["RecordId"]]
        assert (record["PartitionKey"], record["Data"]) == (f"k{i}", f"d{i}".encode())
        assert record["ReceiveCount"] == 1
        assert abs(record["ApproximateArrivalTimestamp"].timestamp() - time.time()) < 60
        assert record["FirstReceiveTimestamp"] >= record["ApproximateArrivalTimestamp"]
        assert 0 < len(record["ReceiptHandle"]) <= 1024
    # The other queue delivers the same records under the same ids, with its own handles.
    others = receive(client, second, 3)
    assert sorted(r["RecordId"] for r in others) == sorted(puts)
    assert not {r["ReceiptHandle"] for r in others} & {r["ReceiptHandle"] for r in records}
    # All three are in flight for 30 s: nothing to receive after a 1 s wait.
    started = time.monotonic()
    assert client.receive_queue_records(QueueARN=first, WaitTimeSeconds=1)["QueueRecords"] == []
    assert 0.9 <= time.monotonic() - started < 5

    by_key = {r["PartitionKey"]: r for r in records}
    acked = client.acknowledge_queue_records(
        QueueARN=first,
        Entries=handles([by_key["k0"]])
        + [{"ReceiptHandle": "garbage"}]
        + handles([others[0]]),  # the other queue's
    )
    assert acked["Successful"] == handles([by_key["k0"]])
    assert [(f["ReceiptHandle"], f["ErrorCode"]) for f in acked["Failed"]] == [
        ("garbage", "InvalidArgumentException"),
        (others[0]["ReceiptHandle"], "InvalidArgumentException"),
    ]
    assert all(f["ErrorMessage"] for f in acked["Failed"])
    again = client.acknowledge_queue_records(QueueARN=first, Entries=handles([by_key["k0"]]))
    assert again["Successful"] == []
    assert [(f["ReceiptHandle"], f["ErrorCode"]) for f in again["Failed"]] == [
        (by_key["k0"]["ReceiptHandle"], "ResourceNotFoundException")
    ]

    # Visibility 0: k1 is received again at once, counted twice, under a new handle.
    visible = client.update_queue_records_visibility(
        QueueARN=first,
        Entries=[
            {"ReceiptHandle": by_key["k1"]["ReceiptHandle"], "VisibilityTimeoutSeconds": 0},
            {"ReceiptHandle": "garbage", "VisibilityTimeoutSeconds": 0},
        ],
    )
    assert visible["Successful"] == handles([by_key["k1"]])
    assert [(f["ReceiptHandle"], f["ErrorCode"]) for f in visible["Failed"]] == [
        ("garbage", "InvalidArgumentException")
    ]
    [redelivered] = receive(client, first, 1, VisibilityTimeoutSeconds=1)
    assert redelivered["RecordId"] == by_key["k1"]["RecordId"]
    assert redelivered["Data"] == b"d1"
    assert redelivered["ReceiveCount"] == 2
    assert redelivered["FirstReceiveTimestamp"] == by_key["k1"]["FirstReceiveTimestamp"]
    assert redelivered["ReceiptHandle"] != by_key["k1"]["ReceiptHandle"]
    # The old handle is stale now.
    stale = client.update_queue_records_visibility(
        QueueARN=first,
        Entries=[{"ReceiptHandle": by_key["k1"]["ReceiptHandle"], "VisibilityTimeoutSeconds": 5}],
    )
    assert [f["ErrorCode"] for f in stale["Failed"]] == ["ResourceNotFoundException"]
    # This receipt's own visibility (1 s, not the queue's 30) expires: a third delivery.
    [third] = receive(client, first, 1)
    assert (third["RecordId"], third["ReceiveCount"]) == (redelivered["RecordId"], 3)
    done = client.acknowledge_queue_records(
        QueueARN=first, Entries=handles([third, by_key["k2"]])
    )
    assert (len(done["Successful"]), done["Failed"]) == (2, [])
    assert client.receive_queue_records(QueueARN=first, WaitTimeSeconds=1)["QueueRecords"] == []
    drop(client, name, [first, second])


def test_queue_long_poll_returns_when_a_record_arrives(client):
    """LATEST skips what was there before; a receive waiting 10 s returns as soon as a record
    is put (from another thread, 1 s later). AT_TIMESTAMP starts at its time."""
    name = unique("py-poll")
    stream = on_demand(client, name)
    client.put_record(StreamName=name, PartitionKey="p", Data=b"before")
    time.sleep(0.05)
    middle = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(0.05)
    client.put_record(StreamName=name, PartitionKey="p", Data=b"after")
    latest = new_queue(client, stream["StreamARN"], name + "-latest")
    at = control(
        client.create_queue,
        QueueName=name + "-at",
        StreamConfigurationList=[{
            "StreamARN": stream["StreamARN"],
            "StartingPosition": {"Type": "AT_TIMESTAMP", "Timestamp": middle},
        }],
    )["QueueDescription"]
    start = at["StreamConfigurationList"][0]["StartingPosition"]
    assert start["Type"] == "AT_TIMESTAMP"
    assert abs(start["Timestamp"] - middle) < datetime.timedelta(milliseconds=2)
    at = queue_status(client, at["QueueARN"], "ACTIVE")["QueueARN"]

    def put_later():
        time.sleep(1)
        client.put_record(StreamName=name, PartitionKey="p", Data=b"late")

    putter = threading.Thread(target=put_later)
    started = time.monotonic()
    putter.start()
    got = client.receive_queue_records(QueueARN=latest, WaitTimeSeconds=10)["QueueRecords"]
    waited = time.monotonic() - started
    putter.join()
    assert [r["Data"] for r in got] == [b"late"]
    assert 0.9 <= waited < 5, waited
    records = receive(client, at, 2)
    assert sorted(r["Data"] for r in records) == [b"after", b"late"]
    drop(client, name, [latest, at])


def test_queue_dead_letters(client):
    """MaxReceiveCount 2: a record received twice without an acknowledgement is a dead letter
    once its last visibility timeout expires; the four dead-letter operations on it."""
    name = unique("py-dlq")
    stream = on_demand(client, name)
    arn = new_queue(
        client,
        stream["StreamARN"],
        name,
        QueueAttributes={
            "VisibilityTimeoutSeconds": 1,
            "DeadLetterConfiguration": {"TargetType": "BUILT_IN", "MaxReceiveCount": 2},
        },
    )
    for key in ("x", "y"):
        client.put_record(StreamName=name, PartitionKey=key, Data=key.encode())
    firsts = receive(client, arn, 2)
    assert [r["ReceiveCount"] for r in firsts] == [1, 1]
    # Their 1 s visibility expires: received a second (and last) time.
    seconds = receive(client, arn, 2)
    assert sorted((r["PartitionKey"], r["ReceiveCount"]) for r in seconds) == [
        ("x", 2), ("y", 2)
    ]
    # Once that timeout expires they are dead letters: the normal path has nothing.
    started = time.monotonic()
    assert client.receive_queue_records(QueueARN=arn, WaitTimeSeconds=2)["QueueRecords"] == []
    assert time.monotonic() - started >= 1.9
    dead = receive(client, arn, 2, dead=True, VisibilityTimeoutSeconds=30)
    by_key = {r["PartitionKey"]: r for r in dead}
    assert sorted(by_key) == ["x", "y"]
    assert {r["RecordId"] for r in dead} == {r["RecordId"] for r in firsts}
    assert by_key["x"]["Data"] == b"x"
    assert not {r["ReceiptHandle"] for r in dead} & {r["ReceiptHandle"] for r in seconds}

    # A normal-path handle means nothing to a dead-letter operation.
    wrong = client.acknowledge_dead_letter_queue_records(
        QueueARN=arn, Entries=handles(seconds[:1])
    )
    assert wrong["Successful"] == []
    assert [f["ErrorCode"] for f in wrong["Failed"]] == ["InvalidArgumentException"]
    wrong = client.restore_dead_letter_queue_records(
        QueueARN=arn, Entries=handles([{"ReceiptHandle": "garbage"}])
    )
    assert [f["ErrorCode"] for f in wrong["Failed"]] == ["InvalidArgumentException"]

    # Visibility 0 on a dead letter: received from the dead-letter path again, new handle.
    visible = client.update_dead_letter_queue_records_visibility(
        QueueARN=arn,
        Entries=[{"ReceiptHandle": by_key["x"]["ReceiptHandle"], "VisibilityTimeoutSeconds": 0}],
    )
    assert (visible["Successful"], visible["Failed"]) == (handles([by_key["x"]]), [])
    [x] = receive(client, arn, 1, dead=True, VisibilityTimeoutSeconds=30)
    assert x["RecordId"] == by_key["x"]["RecordId"]
    assert x["ReceiptHandle"] != by_key["x"]["ReceiptHandle"]
    stale = client.restore_dead_letter_queue_records(QueueARN=arn, Entries=handles([by_key["x"]]))
    assert [f["ErrorCode"] for f in stale["Failed"]] == ["ResourceNotFoundException"]

    # Acknowledging y discards it; restoring x sends it back to the normal path, count reset.
    acked = client.acknowledge_dead_letter_queue_records(
        QueueARN=arn, Entries=handles([by_key["y"]])
    )
    assert (acked["Successful"], acked["Failed"]) == (handles([by_key["y"]]), [])
    restored = client.restore_dead_letter_queue_records(QueueARN=arn, Entries=handles([x]))
    assert (restored["Successful"], restored["Failed"]) == (handles([x]), [])
    [back] = receive(client, arn, 1, VisibilityTimeoutSeconds=30)
    assert (back["RecordId"], back["Data"], back["ReceiveCount"]) == (x["RecordId"], b"x", 1)
    assert client.acknowledge_queue_records(QueueARN=arn, Entries=handles([back]))["Failed"] == []
    assert client.receive_dead_letter_queue_records(QueueARN=arn, WaitTimeSeconds=1)[
        "QueueRecords"
    ] == []
    drop(client, name, [arn])


def test_queue_without_dead_letters_redelivers(client):
    """TargetType NONE: a record is redelivered past the default MaxReceiveCount of 6, and the
    dead-letter path stays empty."""
    name = unique("py-nodlq")
    stream = on_demand(client, name)
    arn = new_queue(
        client,
        stream["StreamARN"],
        name,
        QueueAttributes={"DeadLetterConfiguration": {"TargetType": "NONE"}},
    )
    client.put_record(StreamName=name, PartitionKey="k", Data=b"again")
    counts = []
    for _ in range(8):
        [record] = receive(client, arn, 1)
        assert record["Data"] == b"again"
        counts.append(record["ReceiveCount"])
        # Visible again at once (not acknowledged).
        visible = client.update_queue_records_visibility(
            QueueARN=arn,
            Entries=[{"ReceiptHandle": record["ReceiptHandle"], "VisibilityTimeoutSeconds": 0}],
        )
        assert visible["Failed"] == []
    assert counts == list(range(1, 9))
    assert client.receive_dead_letter_queue_records(QueueARN=arn, WaitTimeSeconds=1)[
        "QueueRecords"
    ] == []
    drop(client, name, [arn])


def test_queue_receive_with_visibility_0_returns_a_record_once(client):
    """A receive with VisibilityTimeoutSeconds 0 delivers each visible record once: one
    receive is one delivery (ReceiveCount goes up by one), even though the record is visible
    again at once."""
    name = unique("py-vis0")
    stream = on_demand(client, name)
    arn = new_queue(
        client,
        stream["StreamARN"],
        name,
        QueueAttributes={"DeadLetterConfiguration": {"TargetType": "NONE"}},
    )
    put = client.put_record(StreamName=name, PartitionKey="k", Data=b"once")
    for count in (1, 2, 3):
        records = client.receive_queue_records(
            QueueARN=arn, WaitTimeSeconds=5, VisibilityTimeoutSeconds=0
        )["QueueRecords"]
        assert [(r["RecordId"], r["ReceiveCount"]) for r in records] == [
            (put["SequenceNumber"], count)
        ]
    drop(client, name, [arn])


def test_queue_tags_policies_and_permissions(client):
    """Tags and resource policies on a queue's ARN; the read-only user describes and lists
    queues but may neither create nor receive, until the queue's policy lets it receive."""
    name = unique("py-qtag")
    stream = on_demand(client, name)
    arn = new_queue(client, stream["StreamARN"], name, Tags={"team": "py", "tier": "1"})
    other = new_queue(client, stream["StreamARN"], name + "-other")

    def tagged(resource, *expected):
        def check():
            listed = client.list_tags_for_resource(ResourceARN=resource)["Tags"]
            assert sorted((t["Key"], t["Value"]) for t in listed) == list(expected)

        eventually(check)

    tagged(arn, ("team", "py"), ("tier", "1"))
    client.tag_resource(ResourceARN=arn, Tags={"tier": "2", "owner": "queues"})
    tagged(arn, ("owner", "queues"), ("team", "py"), ("tier", "2"))
    client.untag_resource(ResourceARN=arn, TagKeys=["team", "owner"])
    tagged(arn, ("tier", "2"))
    tagged(other)

    readonly = spread(boto3.client(
        "kinesis",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="AKIDREADONLY",
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1}),
    ))
    assert control(readonly.describe_queue, QueueARN=arn)["QueueDescription"]["QueueName"] == name
    listed = control(readonly.list_queues, StreamFilter=[{"StreamARN": stream["StreamARN"]}])
    assert [q["QueueARN"] for q in listed["QueueSummaries"]] == [arn, other]

    def denied(call, action, resource, **kwargs):
        try:
            call(**kwargs)
        except readonly.exceptions.ClientError as refused:
            error = refused.response["Error"]
            assert error["Code"] == "AccessDeniedException"
            assert error["Message"] == (
                "User: arn:aws:iam::000000000000:user/readonly is not authorized to perform: "
                f"kinesis:{action} on resource: {resource} because no identity-based policy "
                f"allows the kinesis:{action} action"
            )
            assert refused.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        else:
            raise AssertionError(f"the read-only user was allowed kinesis:{action}")

    def receive_denied(queue):
        denied(readonly.receive_queue_records, "ReceiveQueueRecords", queue, QueueARN=queue,
               WaitTimeSeconds=1)

    receive_denied(arn)
    denied(readonly.create_queue, "CreateQueue", stream["StreamARN"], QueueName=name + "-ro",
           StreamConfigurationList=[{"StreamARN": stream["StreamARN"]}])

    def policy_is(resource, expected):
        def check():
            assert client.get_resource_policy(ResourceARN=resource)["Policy"] == expected

        eventually(check)

    policy_is(arn, "{}")
    policy = json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::000000000000:user/readonly"},
            "Action": [
                "kinesis:ReceiveQueueRecords",
                "kinesis:AcknowledgeQueueRecords",
                "kinesis:DescribeQueue",
            ],
            "Resource": arn,
        }],
    })
    client.put_resource_policy(ResourceARN=arn, Policy=policy)
    policy_is(arn, policy)
    policy_is(other, "{}")
    # The queue's policy lets the read-only user receive and acknowledge there, not elsewhere.
    client.put_record(StreamName=name, PartitionKey="k", Data=b"shared")
    [record] = eventually(lambda: receive(readonly, arn, 1))
    assert record["Data"] == b"shared"
    acked = readonly.acknowledge_queue_records(QueueARN=arn, Entries=handles([record]))
    assert acked["Failed"] == []
    receive_denied(other)
    client.delete_resource_policy(ResourceARN=arn)
    policy_is(arn, "{}")
    eventually(lambda: receive_denied(arn))
    drop(client, name, [arn, other])


def test_queue_reports_its_effective_starting_position_once_active(client):
    """While CREATING a queue echoes its starting position (no Timestamp for LATEST and
    TRIM_HORIZON); once ACTIVE its Timestamp is always there, and for AT_TIMESTAMP it is the
    later of the time given and the earliest time the stream can be read from (the service
    model's QueueStartingPosition.Timestamp): never before the 24 h retention period."""
    name = unique("py-qstart")
    stream = on_demand(client, name)
    long_before = stream["StreamCreationTimestamp"] - datetime.timedelta(days=2)
    starts = {
        "LATEST": {"Type": "LATEST"},
        "TRIM_HORIZON": {"Type": "TRIM_HORIZON"},
        "AT_TIMESTAMP": {"Type": "AT_TIMESTAMP", "Timestamp": long_before},
    }
    arns = {}
    for kind, start in starts.items():
        queue = control(
            client.create_queue,
            QueueName=f"{name}-{kind}",
            StreamConfigurationList=[
                {"StreamARN": stream["StreamARN"], "StartingPosition": start}
            ],
        )["QueueDescription"]
        echoed = queue["StreamConfigurationList"][0]["StartingPosition"]
        assert echoed["Type"] == kind
        assert ("Timestamp" in echoed) == (kind == "AT_TIMESTAMP")
        arns[kind] = queue["QueueARN"]
    try:
        wrong = {}
        for kind, arn in arns.items():
            active = queue_status(client, arn, "ACTIVE")
            start = active["StreamConfigurationList"][0]["StartingPosition"]
            assert start["Type"] == kind
            now = datetime.datetime.now(datetime.timezone.utc)
            at = start.get("Timestamp")
            if at is None or not (
                now - datetime.timedelta(hours=24, seconds=1) <= at
                <= now + datetime.timedelta(seconds=1)
            ):
                wrong[kind] = start
        assert wrong == {}, f"starting positions of ACTIVE queues, at {now}: {wrong}"
    finally:
        drop(client, name, list(arns.values()))


def aws_cli_knows(command):
    """Whether the AWS CLI's own model (awscli bundles its botocore) has `aws kinesis
    COMMAND`."""
    out = subprocess.run(
        [sys.executable, "-m", "awscli", "kinesis", command, "help"],
        env=dict(ENV, PAGER="cat", MANPAGER="cat"),
        capture_output=True,
        text=True,
    )
    return "Invalid choice" not in out.stderr


def test_queue_list_queues_through_the_aws_cli(client):
    """`aws kinesis list-queues --stream-filter`, where the CLI knows the command (awscli
    1.46.3's own model does not, whatever botocore's has)."""
    if not aws_cli_knows("list-queues"):
        pytest.skip("this AWS CLI has no `aws kinesis list-queues`")
    name = unique("py-qcli")
    stream = on_demand(client, name)
    arn = new_queue(client, stream["StreamARN"], name)
    listed = aws("list-queues", "--stream-filter", f"StreamARN={stream['StreamARN']}")
    assert [(q["QueueName"], q["QueueARN"]) for q in listed["QueueSummaries"]] == [(name, arn)]
    drop(client, name, [arn])


# Channels (issue 15). The server runs with --bucket-dir (RIVULET_BUCKET_DIR: a folder per
# bucket) and --channel-time-scale 300 (RIVULET_CHANNEL_TIME_SCALE), so the 300-second minimum
# freshness is one second.
BUCKET_DIR = os.environ.get("RIVULET_BUCKET_DIR")
ROLE = "arn:aws:iam::000000000000:role/kinesis-delivery"


def channel_status(kinesis, arn, status):
    """Polls DescribeChannel until the channel is in `status`; returns its description."""
    for _ in range(100):
        channel = control(kinesis.describe_channel, ChannelARN=arn)["ChannelDescription"]
        if channel["ChannelStatus"] == status:
            return channel
        time.sleep(0.1)
    raise AssertionError(f"channel {arn} is not {status}: {channel}")


def bucket_objects(bucket):
    """Every object of a bucket folder: key -> bytes (temporary files left out)."""
    root = os.path.join(BUCKET_DIR, bucket)
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if not name.startswith("."):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.mark.skipif(not BUCKET_DIR, reason="the server has no --bucket-dir")
def test_channel_delivers_every_record_once_to_a_bucket_folder(client):
    """CreateChannel through boto3 (defaults filled in), 10,000 records put, every one read
    back once from the bucket's gzip objects, a record that is not JSON in the dead-letter
    prefix, UpdateChannel, ListChannels, a missing bucket FAILED, DeleteChannel."""
    import gzip

    bucket = f"lake-{os.getpid()}-{time.time_ns()}"
    os.makedirs(os.path.join(BUCKET_DIR, bucket))
    stream = on_demand(client, unique("channel"))
    created = control(
        client.create_channel,
        ChannelName=unique("to-lake"),
        ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[{
            "StreamARN": stream["StreamARN"],
            "RecordConfiguration": {"RecordFormatType": "JSON"},
        }],
        S3DestinationConfiguration={"StorageConfiguration": {
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "ExpectedBucketOwner": "000000000000",
            "CompressionType": "GZIP",
        }},
        Tags={"team": "data"},
    )["ChannelDescription"]
    assert created["ChannelStatus"] == "CREATING"
    arn = created["ChannelARN"]
    assert arn == f"arn:aws:kinesis:us-east-1:000000000000:channel/{created['ChannelId']}"
    storage = created["S3DestinationConfiguration"]["StorageConfiguration"]
    assert storage["StorageClass"] == "STANDARD"
    assert storage["OutputKeyTemplate"].endswith("!{mm}!{extension}")
    channel_status(client, arn, "ACTIVE")

    records = [json.dumps({"i": i}).encode() for i in range(10_000)]
    for start in range(0, len(records), 500):
        # A new on-demand stream takes 4,000 records a second: throttled entries are put
        # again, as a producer does.
        pending = [{"Data": r, "PartitionKey": str(start + n)}
                   for n, r in enumerate(records[start:start + 500])]
        while pending:
            answer = client.put_records(StreamName=stream["StreamName"], Records=pending)
            pending = [entry for entry, result in zip(pending, answer["Records"])
                       if "ErrorCode" in result]
            if pending:
                time.sleep(0.2)
    client.put_record(StreamName=stream["StreamName"], Data=b"not json", PartitionKey="x")

    def delivered():
        lines, dead = [], []
        for key, body in bucket_objects(bucket).items():
            if key.startswith("kinesis-channel/errors/"):
                dead += [json.loads(line) for line in body.decode().splitlines()]
            else:
                assert key.endswith(".gz"), key
                lines += gzip.decompress(body).decode().splitlines()
        assert len(lines) == len(records) and len(dead) == 1, (len(lines), len(dead))
        return lines, dead

    lines, dead = eventually(delivered, seconds=60)
    assert sorted(json.loads(line)["i"] for line in lines) == list(range(10_000))
    assert dead[0]["errorCode"] == "DESERIALIZATION_ERROR"
    assert dead[0]["streamName"] == stream["StreamName"]

    updated = control(
        client.update_channel,
        ChannelARN=arn,
        S3DestinationConfiguration={"DataFreshnessInSeconds": 900},
    )["ChannelDescription"]
    assert updated["ChannelStatus"] == "UPDATING"
    active = channel_status(client, arn, "ACTIVE")
    assert active["S3DestinationConfiguration"]["DataFreshnessInSeconds"] == 900
    listed = control(
        client.list_channels, StreamFilter=[{"StreamARN": stream["StreamARN"]}]
    )["ChannelSummaries"]
    assert [c["ChannelARN"] for c in listed] == [arn]
    assert listed[0]["ChannelDestinationType"] == "S3"
    tags = control(client.list_tags_for_resource, ResourceARN=arn)["Tags"]
    assert tags == [{"Key": "team", "Value": "data"}]

    with pytest.raises(client.exceptions.ResourceInUseException):
        control(client.delete_stream, StreamName=stream["StreamName"])

    missing = on_demand(client, unique("channel-missing"))
    failed = control(
        client.create_channel,
        ChannelName=unique("to-nowhere"),
        ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[{
            "StreamARN": missing["StreamARN"],
            "RecordConfiguration": {"RecordFormatType": "STRING"},
        }],
        S3DestinationConfiguration={"StorageConfiguration": {
            "BucketARN": "arn:aws:s3:::no-such-bucket",
            "ExpectedBucketOwner": "000000000000",
            "CompressionType": "NONE",
        }},
    )["ChannelDescription"]
    described = channel_status(client, failed["ChannelARN"], "FAILED")
    assert described["ChannelStatusReason"].startswith(
        "The specified bucket does not exist: no-such-bucket"
    )

    for channel_arn in (arn, failed["ChannelARN"]):
        control(client.delete_channel, ChannelARN=channel_arn)

    def deleted(channel_arn):
        # In a cluster the node asked may answer DELETING a moment longer.
        try:
            control(client.describe_channel, ChannelARN=channel_arn)
        except client.exceptions.ResourceNotFoundException:
            return
        raise AssertionError(f"{channel_arn} is not deleted yet")

    eventually(lambda: deleted(arn))
    eventually(lambda: deleted(failed["ChannelARN"]))
    eventually(lambda: control(client.delete_stream, StreamName=stream["StreamName"]))
