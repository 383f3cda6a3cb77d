#!/usr/bin/env bash
# Makes tests/fixtures/serve-v1/: a `rivulet serve` data dir written by the binary of this
# checkout, and expected.json, what tests/upgrade.rs must read back from it after an upgrade.
#
# The server runs on a free port with the committed key file tests/fixtures/serve-v1/kms-keys.toml
# (a copy: the server must not change it, checked below); a stdlib-only Python client creates a
# 4-shard stream and a 2-shard stream that it encrypts with alias/upgrade-fixture (one record
# put before, the rest after), raises both streams' retention to the maximum (8,760 hours: the
# server trims by its real clock, so the fixture's records are served for a year after it was
# made), puts records with fixed partition keys and data, reads everything back, checks it
# against the put answers and records it all. Then the server is stopped with SIGTERM (a clean
# stop cuts the segments' preallocated zeros) and the data dir is moved into place.
#
# Only the storage format it was made with writes this fixture: to regenerate it after the
# format changed, run this script in a checkout (git worktree) of the last commit that had the
# old format, then copy tests/fixtures/serve-v1/ over.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=tests/fixtures/serve-v1
KEYS=$OUT/kms-keys.toml
if [ -e "$OUT/data" ] || [ -e "$OUT/expected.json" ]; then
  echo "$OUT/data or $OUT/expected.json exists: remove them first to regenerate" >&2
  exit 1
fi

cargo build --bin rivulet
BIN=${CARGO_TARGET_DIR:-target}/debug/rivulet

WORK=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
cp "$KEYS" "$WORK/kms-keys.toml"

"$BIN" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 --create-stream-ms 0 \
  --update-stream-ms 0 --delete-stream-ms 0 --limits off --kms-keys "$WORK/kms-keys.toml" \
  >"$WORK/stdout" 2>"$WORK/stderr" &
PID=$!
ADDR=
for _ in $(seq 200); do
  ADDR=$(sed -n 's/^rivulet listening on //p' "$WORK/stdout")
  [ -n "$ADDR" ] && break
  sleep 0.05
done
[ -n "$ADDR" ] || { cat "$WORK/stderr"; echo "rivulet did not start" >&2; exit 1; }

python3 - "$ADDR" "$WORK/expected.json" <<'PYTHON'
"""Drives the server through JSON 1.1 with a SigV4-shaped header (--auth is off)."""
import base64
import http.client
import json
import sys
import time

ADDR, OUT = sys.argv[1], sys.argv[2]
HOST, PORT = ADDR.rsplit(":", 1)
AUTH = ("AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/kinesis/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=0000")
PLAIN, ENCRYPTED = "upgrade-plain", "upgrade-encrypted"
KEY_ALIAS = "alias/upgrade-fixture"
RETENTION_HOURS = 8760


def call(operation, body):
    conn = http.client.HTTPConnection(HOST, int(PORT), timeout=10)
    conn.request("POST", "/", json.dumps(body), {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Kinesis_20131202." + operation,
        "Authorization": AUTH,
        "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
    })
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status != 200:
        sys.exit(f"{operation} answered {response.status}: {data!r}")
    return json.loads(data) if data else {}


def wait_active(stream):
    for _ in range(500):
        summary = call("DescribeStreamSummary", {"StreamName": stream})
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return summary["StreamDescriptionSummary"]
        time.sleep(0.01)
    sys.exit(f"{stream} did not become ACTIVE")


def b64(data):
    return base64.b64encode(data).decode()


def data_of(stream, i):
    """Fixed, partly binary record data."""
    return f"{stream} record {i}: ".encode() + bytes((i * 37 + j * 11) % 256 for j in range(i % 23))


puts = []  # what the puts answered: stream, shard, sequence number, key, data, encryption


def put_record(stream, key, data, explicit_hash_key=None, ordering=None):
    body = {"StreamName": stream, "PartitionKey": key, "Data": b64(data)}
    if explicit_hash_key is not None:
        body["ExplicitHashKey"] = explicit_hash_key
    if ordering is not None:
        body["SequenceNumberForOrdering"] = ordering
    answer = call("PutRecord", body)
    puts.append((stream, answer["ShardId"], answer["SequenceNumber"], key, data,
                 answer.get("EncryptionType", "NONE")))
    return answer


def put_records(stream, entries):
    answer = call("PutRecords", {"StreamName": stream, "Records": [
        {"PartitionKey": key, "Data": b64(data), **({"ExplicitHashKey": h} if h else {})}
        for key, data, h in entries]})
    if answer.get("FailedRecordCount", 0):
        sys.exit(f"PutRecords to {stream} failed: {answer}")
    for (key, data, _), result in zip(entries, answer["Records"]):
        puts.append((stream, result["ShardId"], result["SequenceNumber"], key, data,
                     answer.get("EncryptionType", "NONE")))


for stream, shards in ((PLAIN, 4), (ENCRYPTED, 2)):
    call("CreateStream", {"StreamName": stream, "ShardCount": shards})
    wait_active(stream)
    call("IncreaseStreamRetentionPeriod",
         {"StreamName": stream, "RetentionPeriodHours": RETENTION_HOURS})
    wait_active(stream)

# The 4-shard stream: a batch over every shard, then one record per shard by explicit hash key,
# then one that names the previous number for ordering.
put_records(PLAIN, [(f"pk-{i:02}", data_of(PLAIN, i), None) for i in range(24)])
shards = call("ListShards", {"StreamName": PLAIN})["Shards"]
put_records(PLAIN, [(f"explicit-{n}", data_of(PLAIN, 100 + n),
                     shard["HashKeyRange"]["StartingHashKey"])
                    for n, shard in enumerate(shards)])
last = put_record(PLAIN, "pk-00", data_of(PLAIN, 200))
put_record(PLAIN, "pk-00", data_of(PLAIN, 201), ordering=last["SequenceNumber"])

# The encrypted stream: one record before encryption, the rest after.
put_record(ENCRYPTED, "before-encryption", data_of(ENCRYPTED, 0))
call("StartStreamEncryption",
     {"StreamName": ENCRYPTED, "EncryptionType": "KMS", "KeyId": KEY_ALIAS})
wait_active(ENCRYPTED)
put_records(ENCRYPTED, [(f"secret-{i:02}", data_of(ENCRYPTED, i), None) for i in range(1, 11)])
put_record(ENCRYPTED, "secret-last", data_of(ENCRYPTED, 11))


def read_shard(stream, shard_id):
    iterator = call("GetShardIterator", {"StreamName": stream, "ShardId": shard_id,
                                         "ShardIteratorType": "TRIM_HORIZON"})["ShardIterator"]
    records = []
    while True:
        page = call("GetRecords", {"ShardIterator": iterator})
        records += page["Records"]
        if not page["Records"] or "NextShardIterator" not in page:
            return records
        iterator = page["NextShardIterator"]


streams = {}
for stream in (PLAIN, ENCRYPTED):
    summary = wait_active(stream)
    shards = call("ListShards", {"StreamName": stream})["Shards"]
    records = []
    for shard in shards:
        for r in read_shard(stream, shard["ShardId"]):
            records.append({
                "shard_id": shard["ShardId"],
                "sequence_number": r["SequenceNumber"],
                "partition_key": r["PartitionKey"],
                "data_base64": r["Data"],
                "approximate_arrival_ms": round(r["ApproximateArrivalTimestamp"] * 1000),
                "encryption_type": r.get("EncryptionType", "NONE"),
            })
    answered = sorted((s, seq, k, b64(d), e) for t, s, seq, k, d, e in puts if t == stream)
    read = sorted((r["shard_id"], r["sequence_number"], r["partition_key"], r["data_base64"],
                   r["encryption_type"]) for r in records)
    if answered != read:
        sys.exit(f"{stream}: what was read back differs from what the puts answered")
    streams[stream] = {
        "arn": summary["StreamARN"],
        "creation_ms": round(summary["StreamCreationTimestamp"] * 1000),
        "retention_hours": summary["RetentionPeriodHours"],
        "encryption_type": summary.get("EncryptionType", "NONE"),
        "key_id": summary.get("KeyId"),
        "shards": [{
            "shard_id": s["ShardId"],
            "starting_hash_key": s["HashKeyRange"]["StartingHashKey"],
            "ending_hash_key": s["HashKeyRange"]["EndingHashKey"],
            "starting_sequence_number": s["SequenceNumberRange"]["StartingSequenceNumber"],
        } for s in shards],
        "records": records,
    }

with open(OUT, "w") as f:
    json.dump({
        "about": "The serve-v1 fixture: data/ is a `rivulet serve` data dir made by "
                 "scripts/make-upgrade-fixture.sh, stopped with SIGTERM; kms-keys.toml is its "
                 "key file. Per stream: its description, shards and every record in shard "
                 "order, then read order, as GetRecords returned them (data in base64, arrival "
                 "times in epoch ms). Retention is 8,760 hours from made_at_ms.",
        "made_by": "scripts/make-upgrade-fixture.sh",
        "made_at_ms": round(time.time() * 1000),
        "account_id": "000000000000",
        "region": "us-east-1",
        "kms_key_alias": KEY_ALIAS,
        "streams": streams,
    }, f, indent=1)
    f.write("\n")
print(f"{sum(len(s['records']) for s in streams.values())} records in {len(streams)} streams")
PYTHON

kill -TERM "$PID"
STATUS=0
wait "$PID" || STATUS=$?
PID=
[ "$STATUS" -eq 0 ] || { cat "$WORK/stderr"; echo "rivulet exited with $STATUS" >&2; exit 1; }
cmp -s "$KEYS" "$WORK/kms-keys.toml" || { echo "the server changed the key file" >&2; exit 1; }

mv "$WORK/data" "$OUT/data"
mv "$WORK/expected.json" "$OUT/expected.json"
find "$OUT" -type f -printf '%10s  %p\n' | sort -k2
du -sb "$OUT"
