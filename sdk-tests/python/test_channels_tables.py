"""Channels into Apache Iceberg streaming tables, read back by other engines: pyiceberg and
DuckDB (with its pinned extension wheels, since a fresh machine cannot download extensions).
Once through the embedded default (a sqlite SQL catalog per table bucket folder), once
through SeaweedFS's Iceberg REST catalog with data files on its S3 API. Every record once, in
the schema the JSON Schema file declares; a record that does not fit under the dead-letter
prefix."""

import glob
import json
import os
import shutil
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from seaweed import ACCESS_KEY, SECRET_KEY, WEED, Rivulet, Weed  # noqa: E402

pytestmark = pytest.mark.skipif(
    "RIVULET_ENDPOINTS" in os.environ, reason="the cluster pass of the suite"
)
ROLE = "arn:aws:iam::000000000000:role/kinesis-delivery"
FAST = ["--create-stream-ms", "0", "--delete-stream-ms", "0", "--update-stream-ms", "0",
        "--limits", "off", "--channel-time-scale", "300"]
SCHEMA = {
    "type": "object",
    "required": ["id", "at"],
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"},
        "item": {"type": "string"},
        "price": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}
RECORDS = 10_000


def duckdb_connection():
    """DuckDB with the iceberg, avro and httpfs extensions loaded from their wheels."""
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_httpfs
    import duckdb_extension_iceberg

    con = duckdb.connect()
    for module in (duckdb_extension_httpfs, duckdb_extension_avro, duckdb_extension_iceberg):
        root = os.path.dirname(module.__file__)
        (path,) = glob.glob(os.path.join(root, "extensions", "*", "*.duckdb_extension"))
        con.execute(f"LOAD '{path}'")
    return con


def start_channel(kinesis, table_bucket_arn, dead_letter_bucket):
    kinesis.create_stream(StreamName="orders", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    kinesis.get_waiter("stream_exists").wait(
        StreamName="orders", WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    arn = kinesis.describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]["StreamARN"]
    created = kinesis.create_channel(
        ChannelName="orders-table", ServiceExecutionRoleARN=ROLE,
        StreamConfigurationList=[{"StreamARN": arn, "RecordConfiguration": {
            "RecordFormatType": "JSON",
            "GSRSchemaARN": "arn:aws:glue:us-east-1:000000000000:schema/shop/orders"}}],
        S3TablesDestinationConfiguration={
            "DeadLetterQueueS3Configuration": {
                "BucketARN": f"arn:aws:s3:::{dead_letter_bucket}",
                "ExpectedBucketOwner": "000000000000"},
            "S3TablesConfigurationList": [{
                "TableBucketARN": table_bucket_arn, "Namespace": "shop", "TableName": "orders",
                "CompressionType": "ZSTD",
                "PartitionSpec": {"PartitionFields": [{"Transform": "TIME_HOUR", "SourceName": "at"}]},
            }],
        },
    )["ChannelDescription"]
    assert created["ChannelStatus"] == "CREATING"
    deadline = time.monotonic() + 30
    while True:
        channel = kinesis.describe_channel(ChannelARN=created["ChannelARN"])["ChannelDescription"]
        if channel["ChannelStatus"] != "CREATING":
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert channel["ChannelStatus"] == "ACTIVE", channel
    assert channel["S3TablesDestinationConfiguration"]["S3TablesConfigurationList"][0][
        "PartitionSpec"] == {"PartitionFields": [{"Transform": "TIME_HOUR", "SourceName": "at"}]}
    records = [json.dumps({"id": i, "at": f"2026-12-03T{i % 24:02d}:30:00Z", "item": f"i{i}",
                           "price": i / 4, "tags": ["a", str(i)], "ignored": True}).encode()
               for i in range(RECORDS)]
    records.append(b'{"item": "no id and no time"}')
    for start in range(0, len(records), 500):
        kinesis.put_records(StreamName="orders", Records=[
            {"Data": r, "PartitionKey": str(start + i)} for i, r in enumerate(records[start:start + 500])])


def eventually(check, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (AssertionError, Exception) as error:  # noqa: BLE001 - the table may not exist yet
            if time.monotonic() > deadline:
                raise error
            time.sleep(0.5)


def check_table(table):
    """Every record once, in the declared schema (hour-partitioned)."""
    assert [f.name for f in table.schema().fields] == ["id", "at", "item", "price", "tags"]
    schema = {f.name: (str(f.field_type), f.required) for f in table.schema().fields}
    assert schema["id"] == ("long", True)
    assert schema["at"] == ("timestamptz", True)
    assert schema["item"] == ("string", False)
    assert schema["price"] == ("double", False)
    assert schema["tags"][0].startswith("list<string>")
    assert "ignored" not in schema
    assert [str(f.transform) for f in table.spec().fields] == ["hour"]
    rows = table.scan().to_arrow()
    assert rows.num_rows == RECORDS, rows.num_rows
    assert sorted(rows.column("id").to_pylist()) == list(range(RECORDS))
    return rows


def test_local_table_bucket_read_by_pyiceberg_and_duckdb():
    from pyiceberg.catalog.sql import SqlCatalog

    data = tempfile.mkdtemp(prefix="rivulet-tables-")
    os.makedirs(f"{data}/table-buckets/tables")
    os.makedirs(f"{data}/schemas/shop")
    os.makedirs(f"{data}/buckets/dead-letters")
    with open(f"{data}/schemas/shop/orders.json", "w") as f:
        json.dump(SCHEMA, f)
    server = Rivulet("--data-dir", data, *FAST)
    try:
        start_channel(server.kinesis(), "arn:aws:s3tables:us-east-1:000000000000:bucket/tables",
                      "dead-letters")
        catalog = SqlCatalog(
            "tables", uri=f"sqlite:///{data}/table-buckets/tables/catalog.db",
            warehouse=f"file://{data}/table-buckets/tables/warehouse")
        table = eventually(lambda: check_table(catalog.load_table("shop.orders")) and
                           catalog.load_table("shop.orders"))
        con = duckdb_connection()
        count, low, high, hours = con.execute(
            f"SELECT count(*), min(id), max(id), count(DISTINCT date_trunc('hour', \"at\")) "
            f"FROM iceberg_scan('{table.metadata_location}')").fetchone()
        assert (count, low, high, hours) == (RECORDS, 0, RECORDS - 1, 24)
        dead = []
        for path in glob.glob(f"{data}/buckets/dead-letters/kinesis-channel/errors/**/*.json",
                              recursive=True):
            dead += [json.loads(line) for line in open(path)]
        assert len(dead) == 1 and dead[0]["errorCode"] == "INVALID_SCHEMA", dead
    finally:
        server.kill()
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.skipif(not WEED, reason="no RIVULET_WEED (scripts/seaweedfs.sh)")
def test_seaweedfs_rest_catalog_read_by_pyiceberg_and_duckdb():
    from pyiceberg.catalog import load_catalog

    weed = Weed(table_bucket="warehouse")
    schemas = tempfile.mkdtemp(prefix="rivulet-schemas-")
    os.makedirs(f"{schemas}/shop")
    with open(f"{schemas}/shop/orders.json", "w") as f:
        json.dump(SCHEMA, f)
    weed.s3().create_bucket(Bucket="dead-letters")
    server = Rivulet(
        "--in-memory", "--s3-endpoint", weed.s3_endpoint,
        "--iceberg-catalog", weed.iceberg_endpoint,
        "--iceberg-catalog-credential", f"{ACCESS_KEY}:{SECRET_KEY}",
        "--schema-dir", schemas, *FAST)
    try:
        start_channel(server.kinesis(), "arn:aws:s3tables:us-east-1:000000000000:bucket/warehouse",
                      "dead-letters")
        catalog = load_catalog("seaweed", **{
            "type": "rest", "uri": weed.iceberg_endpoint,
            "warehouse": "arn:aws:s3tables:us-east-1:000000000000:bucket/warehouse",
            "credential": f"{ACCESS_KEY}:{SECRET_KEY}",
            "oauth2-server-uri": f"{weed.iceberg_endpoint}/v1/oauth/tokens",
            "s3.endpoint": weed.s3_endpoint, "s3.access-key-id": ACCESS_KEY,
            "s3.secret-access-key": SECRET_KEY, "s3.region": "us-east-1",
            "s3.path-style-access": "true",
        })
        table = eventually(lambda: check_table(catalog.load_table("shop.orders")) and
                           catalog.load_table("shop.orders"))
        con = duckdb_connection()
        con.execute(f"""CREATE SECRET (TYPE s3, KEY_ID '{ACCESS_KEY}', SECRET '{SECRET_KEY}',
            ENDPOINT '127.0.0.1:{weed.s3_port}', URL_STYLE 'path', USE_SSL false,
            REGION 'us-east-1')""")
        count, low, high = con.execute(
            f"SELECT count(*), min(id), max(id) FROM iceberg_scan('{table.metadata_location}')"
        ).fetchone()
        assert (count, low, high) == (RECORDS, 0, RECORDS - 1)
        s3 = weed.s3()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="dead-letters").get("Contents", [])]
        assert len(keys) == 1 and keys[0].startswith("kinesis-channel/errors/orders-table/"), keys
    finally:
        server.kill()
        weed.stop()
        shutil.rmtree(schemas, ignore_errors=True)
