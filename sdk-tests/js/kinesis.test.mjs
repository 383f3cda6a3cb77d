// Rivulet through @aws-sdk/client-kinesis v3, whose default handler speaks HTTP/2 to an
// http:// endpoint (h2c with prior knowledge) for every call, SubscribeToShard included.
// RIVULET_ENDPOINT (http://host:port) names a running server with zero lifecycle delays.
// RIVULET_ENDPOINTS (comma-separated), when set, names every node of a cluster: each request
// then goes to the next node in turn.
// The SDK has no queue operations yet: those are sent raw, built, signed and sent over HTTP/2 by
// the same pieces the SDK uses (HttpRequest, SignatureV4 with its Sha256, NodeHttp2Handler).

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  KinesisClient,
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  ListShardsCommand,
  PutRecordCommand,
  PutRecordsCommand,
  GetShardIteratorCommand,
  GetRecordsCommand,
  RegisterStreamConsumerCommand,
  DescribeStreamConsumerCommand,
  SubscribeToShardCommand,
  SplitShardCommand,
  DeleteStreamCommand,
  StartStreamEncryptionCommand,
  KMSNotFoundException,
  AccessDeniedException,
  ResourceNotFoundException,
  ResourceInUseException,
} from "@aws-sdk/client-kinesis";
import { Sha256 } from "@smithy/core/checksum";
import { HttpRequest } from "@smithy/core/protocols";
import { NodeHttp2Handler, streamCollector } from "@smithy/node-http-handler";
import { SignatureV4 } from "@smithy/signature-v4";

const endpoint = process.env.RIVULET_ENDPOINT;
assert.ok(endpoint, "RIVULET_ENDPOINT must be set");

const endpoints = (process.env.RIVULET_ENDPOINTS ?? endpoint).split(",");
let turn = 0;

// Sends each of the client's requests to the next node in turn, before it is signed.
function spread(client) {
  if (endpoints.length > 1) {
    client.middlewareStack.add(
      (next) => async (args) => {
        const node = new URL(endpoints[turn++ % endpoints.length]);
        args.request.hostname = node.hostname;
        args.request.port = Number(node.port);
        return next(args);
      },
      { step: "build", name: "spreadOverNodes" },
    );
  }
  return client;
}

const client = spread(new KinesisClient({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "AKIDJS", secretAccessKey: "secret" },
  maxAttempts: 1,
}));

const unique = (name) => `${name}-${process.pid}-${Date.now()}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A stream of `shards` shards, or ON_DEMAND when `shards` is omitted; waits until it is ACTIVE.
async function createStream(name, shards) {
  await client.send(
    new CreateStreamCommand(
      shards === undefined
        ? { StreamName: name, StreamModeDetails: { StreamMode: "ON_DEMAND" } }
        : { StreamName: name, ShardCount: shards },
    ),
  );
  for (let i = 0; i < 100; i++) {
    const s = await client.send(new DescribeStreamSummaryCommand({ StreamName: name }));
    if (s.StreamDescriptionSummary.StreamStatus === "ACTIVE") return s.StreamDescriptionSummary;
    await sleep(100);
  }
  throw new Error(`${name} never became ACTIVE`);
}

// Raw calls for what the SDK cannot send: JSON 1.1 over HTTP/2 (one session per request, as the
// SDK's default handler), signed as the SDK signs, each to the next node in turn.
const h2 = new NodeHttp2Handler({ disableConcurrentStreams: true });
const signer = (accessKeyId, secretAccessKey) =>
  new SignatureV4({
    credentials: { accessKeyId, secretAccessKey },
    region: "us-east-1",
    service: "kinesis",
    sha256: Sha256,
  });
const jsSigner = signer("AKIDJS", "secret");

// POSTs `input` as `operation`; answers the HTTP status and the decoded JSON body.
async function raw(operation, input, sign = jsSigner) {
  const node = new URL(endpoints[turn++ % endpoints.length]);
  const body = JSON.stringify(input);
  const request = new HttpRequest({
    method: "POST",
    protocol: node.protocol,
    hostname: node.hostname,
    port: node.port ? Number(node.port) : undefined,
    path: "/",
    headers: {
      host: node.host,
      "content-type": "application/x-amz-json-1.1",
      "content-length": String(Buffer.byteLength(body)),
      "x-amz-target": `Kinesis_20131202.${operation}`,
    },
    body,
  });
  const { response } = await h2.handle(await sign.sign(request), { requestTimeout: 30_000 });
  const text = Buffer.from(await streamCollector(response.body)).toString();
  return { status: response.statusCode, body: text ? JSON.parse(text) : {} };
}

// `raw`, answering the body of a 200 and throwing any other answer as an Error named by its
// __type; a control-plane call rate exceeded (5 calls a second per operation) is waited out.
async function call(operation, input) {
  for (let attempt = 0; ; attempt++) {
    const { status, body } = await raw(operation, input);
    if (status === 200) return body;
    const type = String(body.__type ?? "").split("#").pop();
    if (type === "LimitExceededException" && /^Rate exceeded/.test(body.message) && attempt < 50) {
      await sleep(200);
      continue;
    }
    throw Object.assign(new Error(`${operation}: ${status} ${type}: ${body.message}`), {
      name: type,
      status,
    });
  }
}

async function readShard(stream, shardId, type = "TRIM_HORIZON") {
  const records = [];
  let { ShardIterator: it } = await client.send(
    new GetShardIteratorCommand({ StreamName: stream, ShardId: shardId, ShardIteratorType: type }),
  );
  let children;
  while (it) {
    const page = await client.send(new GetRecordsCommand({ ShardIterator: it }));
    records.push(...page.Records);
    children = page.ChildShards;
    if (page.Records.length === 0 && page.MillisBehindLatest === 0 && !children?.length) break;
    it = page.NextShardIterator;
  }
  return { records, children };
}

test("produce and consume by polling; errors as AWS", async () => {
  const name = unique("js");
  await createStream(name, 2);
  const one = await client.send(
    new PutRecordCommand({ StreamName: name, PartitionKey: "a", Data: Buffer.from("hello") }),
  );
  assert.match(one.SequenceNumber, /^\d{50,}$/);
  const many = await client.send(
    new PutRecordsCommand({
      StreamName: name,
      Records: Array.from({ length: 50 }, (_, i) => ({
        PartitionKey: `k${i}`,
        Data: Buffer.from(`r${i}`),
      })),
    }),
  );
  assert.equal(many.FailedRecordCount, 0);
  const { Shards } = await client.send(new ListShardsCommand({ StreamName: name }));
  let total = 0;
  for (const shard of Shards) {
    const { records } = await readShard(name, shard.ShardId);
    total += records.length;
    for (const r of records) {
      assert.ok(r.ApproximateArrivalTimestamp instanceof Date);
      assert.ok(Math.abs(r.ApproximateArrivalTimestamp.getTime() - Date.now()) < 60_000);
    }
  }
  assert.equal(total, 51);
  await assert.rejects(
    client.send(new DescribeStreamSummaryCommand({ StreamName: "no-such-stream" })),
    (e) =>
      e instanceof ResourceNotFoundException &&
      e.message === "Stream no-such-stream under account 000000000000 not found.",
  );
  await client.send(new DeleteStreamCommand({ StreamName: name }));
});

test("SubscribeToShard pushes records over HTTP/2", async () => {
  const name = unique("js-efo");
  const summary = await createStream(name, 1);
  const { Consumer } = await client.send(
    new RegisterStreamConsumerCommand({ StreamARN: summary.StreamARN, ConsumerName: "js" }),
  );
  for (let i = 0; i < 100; i++) {
    const d = await client.send(
      new DescribeStreamConsumerCommand({ ConsumerARN: Consumer.ConsumerARN }),
    );
    if (d.ConsumerDescription.ConsumerStatus === "ACTIVE") break;
    await sleep(100);
  }
  const first = await client.send(
    new PutRecordCommand({ StreamName: name, PartitionKey: "p", Data: Buffer.from("early") }),
  );
  const sub = await client.send(
    new SubscribeToShardCommand({
      ConsumerARN: Consumer.ConsumerARN,
      ShardId: "shardId-000000000000",
      StartingPosition: { Type: "AT_SEQUENCE_NUMBER", SequenceNumber: first.SequenceNumber },
    }),
  );
  // A second subscription within 5 s is refused.
  await assert.rejects(
    client.send(
      new SubscribeToShardCommand({
        ConsumerARN: Consumer.ConsumerARN,
        ShardId: "shardId-000000000000",
        StartingPosition: { Type: "LATEST" },
      }),
    ),
    (e) => e instanceof ResourceInUseException,
  );
  const seen = [];
  let continuation;
  let putLater = true;
  for await (const event of sub.EventStream) {
    if (!event.SubscribeToShardEvent) continue;
    const e = event.SubscribeToShardEvent;
    seen.push(...e.Records.map((r) => Buffer.from(r.Data).toString()));
    continuation = e.ContinuationSequenceNumber;
    if (putLater) {
      putLater = false;
      await client.send(
        new PutRecordCommand({ StreamName: name, PartitionKey: "p", Data: Buffer.from("late") }),
      );
    }
    if (seen.length >= 2) break;
  }
  assert.deepEqual(seen, ["early", "late"]);
  assert.match(continuation, /^\d{50,}$/);
  await client.send(new DeleteStreamCommand({ StreamName: name, EnforceConsumerDeletion: true }));
});

test("reshard while a consumer reads: parents drained before children", async () => {
  const name = unique("js-split");
  await createStream(name, 1);
  for (let i = 0; i < 20; i++) {
    await client.send(
      new PutRecordCommand({ StreamName: name, PartitionKey: `k${i}`, Data: Buffer.from(`${i}`) }),
    );
  }
  await client.send(
    new SplitShardCommand({
      StreamName: name,
      ShardToSplit: "shardId-000000000000",
      NewStartingHashKey: "170141183460469231731687303715884105728",
    }),
  );
  for (let i = 0; i < 100; i++) {
    const s = await client.send(new DescribeStreamSummaryCommand({ StreamName: name }));
    if (s.StreamDescriptionSummary.StreamStatus === "ACTIVE") break;
    await sleep(100);
  }
  for (let i = 20; i < 40; i++) {
    await client.send(
      new PutRecordCommand({ StreamName: name, PartitionKey: `k${i}`, Data: Buffer.from(`${i}`) }),
    );
  }
  const parent = await readShard(name, "shardId-000000000000");
  assert.equal(parent.records.length, 20);
  assert.deepEqual(
    parent.children.map((c) => c.ShardId),
    ["shardId-000000000001", "shardId-000000000002"],
  );
  let after = 0;
  for (const child of parent.children) {
    after += (await readShard(name, child.ShardId)).records.length;
  }
  assert.equal(after, 20);
  await client.send(new DeleteStreamCommand({ StreamName: name }));
});

test("encryption at rest and a denied call over HTTP/2", async () => {
  const name = unique("js-encrypted");
  await createStream(name, 1);
  await assert.rejects(
    client.send(
      new StartStreamEncryptionCommand({ StreamName: name, EncryptionType: "KMS", KeyId: "alias/none" }),
    ),
    (e) => e instanceof KMSNotFoundException && /alias\/none is not found/.test(e.message),
  );
  await client.send(
    new StartStreamEncryptionCommand({ StreamName: name, EncryptionType: "KMS", KeyId: "alias/aws/kinesis" }),
  );
  const summary = await client.send(new DescribeStreamSummaryCommand({ StreamName: name }));
  assert.equal(summary.StreamDescriptionSummary.EncryptionType, "KMS");
  assert.equal(summary.StreamDescriptionSummary.KeyId, "alias/aws/kinesis");
  const put = await client.send(
    new PutRecordCommand({ StreamName: name, PartitionKey: "k", Data: new TextEncoder().encode("secret") }),
  );
  assert.equal(put.EncryptionType, "KMS");
  const { records } = await readShard(name, "shardId-000000000000");
  assert.equal(records.length, 1);
  assert.equal(new TextDecoder().decode(records[0].Data), "secret");
  assert.equal(records[0].EncryptionType, "KMS");

  // A read-only principal is refused writes with AWS's AccessDeniedException.
  const readonly = spread(new KinesisClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDREADONLY", secretAccessKey: "secret" },
    maxAttempts: 1,
  }));
  await assert.rejects(
    readonly.send(new PutRecordCommand({ StreamName: name, PartitionKey: "k", Data: new Uint8Array([1]) })),
    (e) =>
      e instanceof AccessDeniedException &&
      e.message ===
        `User: arn:aws:iam::000000000000:user/readonly is not authorized to perform: kinesis:PutRecord on resource: ${summary.StreamDescriptionSummary.StreamARN} because no identity-based policy allows the kinesis:PutRecord action`,
  );
  readonly.destroy();
});

test("queues by raw signed calls over HTTP/2: receive, acknowledge, dead letters", async () => {
  const name = unique("js-queue");
  const stream = await createStream(name);
  const created = await call("CreateQueue", {
    QueueName: name,
    StreamConfigurationList: [{ StreamARN: stream.StreamARN, StartingPosition: { Type: "TRIM_HORIZON" } }],
    QueueAttributes: {
      VisibilityTimeoutSeconds: 1,
      DeadLetterConfiguration: { TargetType: "BUILT_IN", MaxReceiveCount: 1 },
    },
  });
  const arn = created.QueueDescription.QueueARN;
  assert.equal(created.QueueDescription.QueueStatus, "CREATING");
  assert.equal(created.QueueDescription.QueueName, name);
  assert.ok(arn.startsWith("arn:aws:kinesis:us-east-1:000000000000:queue/"), arn);
  let queue;
  for (let i = 0; i < 50; i++) {
    queue = (await call("DescribeQueue", { QueueARN: arn })).QueueDescription;
    if (queue.QueueStatus === "ACTIVE") break;
    await sleep(100);
  }
  assert.equal(queue.QueueStatus, "ACTIVE");
  assert.deepEqual(queue.QueueAttributes, {
    VisibilityTimeoutSeconds: 1,
    DeadLetterConfiguration: { TargetType: "BUILT_IN", MaxReceiveCount: 1 },
  });

  // A wrong secret for a known key is refused before the operation, as AWS: HTTP 400.
  const forged = await raw("DescribeQueue", { QueueARN: arn }, signer("AKIDJS", "not-the-secret"));
  assert.equal(forged.status, 400);
  assert.match(forged.body.__type, /InvalidSignatureException/);
  const stranger = await raw("DescribeQueue", { QueueARN: arn }, signer("AKIDNOBODY", "secret"));
  assert.equal(stranger.status, 400);
  assert.match(stranger.body.__type, /UnrecognizedClientException/);

  const put = new Map(); // SequenceNumber -> [PartitionKey, Data]
  for (let i = 0; i < 5; i++) {
    const { SequenceNumber } = await client.send(
      new PutRecordCommand({ StreamName: name, PartitionKey: `k${i}`, Data: Buffer.from(`q${i}`) }),
    );
    put.set(SequenceNumber, [`k${i}`, `q${i}`]);
  }
  const received = [];
  const deadline = Date.now() + 10_000;
  while (received.length < 5 && Date.now() < deadline) {
    const page = await call("ReceiveQueueRecords", { QueueARN: arn, Limit: 10, WaitTimeSeconds: 5 });
    received.push(...page.QueueRecords);
  }
  assert.equal(received.length, 5);
  assert.deepEqual(new Set(received.map((r) => r.RecordId)), new Set(put.keys()));
  for (const r of received) {
    assert.deepEqual([r.PartitionKey, Buffer.from(r.Data, "base64").toString()], put.get(r.RecordId));
    assert.equal(r.ReceiveCount, 1);
    assert.equal(typeof r.ReceiptHandle, "string");
  }

  // Three acknowledged within their 1 s; the other two expire and, received once
  // (MaxReceiveCount 1), become dead letters.
  const handles = (records) => records.map((r) => ({ ReceiptHandle: r.ReceiptHandle }));
  const acked = received.slice(0, 3);
  const left = received.slice(3);
  const ack = await call("AcknowledgeQueueRecords", { QueueARN: arn, Entries: handles(acked) });
  assert.deepEqual(ack, { Successful: handles(acked), Failed: [] });
  await sleep(1_500);
  const none = await call("ReceiveQueueRecords", { QueueARN: arn, WaitTimeSeconds: 1 });
  assert.deepEqual(none.QueueRecords, []);

  const dead = [];
  const deadDeadline = Date.now() + 10_000;
  while (dead.length < 2 && Date.now() < deadDeadline) {
    const page = await call("ReceiveDeadLetterQueueRecords", {
      QueueARN: arn,
      WaitTimeSeconds: 1,
      VisibilityTimeoutSeconds: 30,
    });
    dead.push(...page.QueueRecords);
  }
  assert.deepEqual(
    dead.map((r) => r.RecordId).sort(),
    left.map((r) => r.RecordId).sort(),
  );
  for (const r of dead) {
    assert.deepEqual([r.PartitionKey, Buffer.from(r.Data, "base64").toString()], put.get(r.RecordId));
  }
  // The garbage handle fails alone; the two dead letters are acknowledged.
  const deadAck = await call("AcknowledgeDeadLetterQueueRecords", {
    QueueARN: arn,
    Entries: [...handles(dead), { ReceiptHandle: "garbage" }],
  });
  assert.deepEqual(deadAck.Successful, handles(dead));
  assert.equal(deadAck.Failed.length, 1);
  assert.equal(deadAck.Failed[0].ReceiptHandle, "garbage");
  assert.equal(deadAck.Failed[0].ErrorCode, "InvalidArgumentException");
  const noneDead = await call("ReceiveDeadLetterQueueRecords", { QueueARN: arn, WaitTimeSeconds: 1 });
  assert.deepEqual(noneDead.QueueRecords, []);

  assert.deepEqual(await call("DeleteQueue", { QueueARN: arn }), {});
  let gone;
  for (let i = 0; i < 50 && !gone; i++) {
    await call("DescribeQueue", { QueueARN: arn }).then(
      () => sleep(100),
      (e) => {
        gone = e;
      },
    );
  }
  assert.equal(gone?.name, "ResourceNotFoundException");
  await client.send(new DeleteStreamCommand({ StreamName: name }));
  h2.destroy();
});
