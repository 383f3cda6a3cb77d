// The web console in headless Chromium (Debian's chromium, driven by playwright-core): a
// browser opening the server is sent to the console and signs in with Basic credentials (the
// server runs with --auth sigv4), a stream created through the API shows up, its chart moves
// once records are put, the record browser decodes them, and a screenshot is kept as an
// artefact (target/console.png).

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { chromium } from "playwright-core";
import {
  KinesisClient,
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  PutRecordsCommand,
  EnableEnhancedMonitoringCommand,
  RegisterStreamConsumerCommand,
} from "@aws-sdk/client-kinesis";

const endpoint = process.env.RIVULET_ENDPOINT;
assert.ok(endpoint, "RIVULET_ENDPOINT must be set");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const client = new KinesisClient({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "AKIDJS", secretAccessKey: "secret" },
  maxAttempts: 1,
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("the console shows a stream and its traffic", { timeout: 120_000 }, async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (see .ci/run)`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  try {
    // The suite's server runs with --auth sigv4: the console asks for Basic credentials, an
    // access key id and its secret, which the browser context answers with.
    const context = await browser.newContext({
      viewport: { width: 1200, height: 1400 },
      httpCredentials: { username: "AKIDJS", password: "secret" },
    });
    const page = await context.newPage();
    // A browser opening the endpoint is redirected to the console.
    const response = await page.goto(`${endpoint}/`);
    assert.ok(response.ok(), `console answered ${response.status()}`);
    assert.ok(page.url().endsWith("/_rivulet/"), page.url());
    await page.waitForSelector("body[data-ready=true]");

    const name = `console-${process.pid}-${Date.now()}`;
    await client.send(new CreateStreamCommand({ StreamName: name, ShardCount: 2 }));
    for (let i = 0; i < 100; i++) {
      const s = await client.send(new DescribeStreamSummaryCommand({ StreamName: name }));
      if (s.StreamDescriptionSummary.StreamStatus === "ACTIVE") break;
      await sleep(100);
    }
    // Shard-level metrics and a consumer, so the per-shard charts and consumers show too.
    await client.send(new EnableEnhancedMonitoringCommand({ StreamName: name, ShardLevelMetrics: ["ALL"] }));
    const summary = await client.send(new DescribeStreamSummaryCommand({ StreamName: name }));
    await client.send(new RegisterStreamConsumerCommand({
      StreamARN: summary.StreamDescriptionSummary.StreamARN,
      ConsumerName: "console-reader",
    }));
    const row = page.locator(`tr[data-stream="${name}"]`);
    await row.waitFor({ timeout: 10_000 });
    await row.click();
    await page.waitForFunction((n) => document.getElementById("stream-title").textContent === n, name);
    assert.equal(await page.locator("#shard-map .shard.open").count(), 2);

    // Traffic: the records chart rises above zero.
    const encoder = new TextEncoder();
    const deadline = Date.now() + 20_000;
    let moved = false;
    for (let round = 0; Date.now() < deadline && !moved; round++) {
      await client.send(new PutRecordsCommand({
        StreamName: name,
        Records: Array.from({ length: 50 }, (_, i) => ({
          PartitionKey: `key-${round}-${i}`,
          Data: encoder.encode(JSON.stringify({ order: round * 50 + i, item: "coffee" })),
        })),
      }));
      await sleep(250);
      moved = Number(await page.locator("#chart-records").getAttribute("data-max")) > 0;
    }
    assert.ok(moved, "the records chart never moved");
    assert.ok(await page.locator('#shard-charts canvas[data-shard="shardId-000000000000"]').count() >= 4);
    await page.locator("#consumers td", { hasText: "console-reader" }).waitFor({ timeout: 10_000 });

    // The record browser reads a shard from the start and shows JSON decoded.
    await page.selectOption("#browse-position", "TRIM_HORIZON");
    await page.click("#browse-start");
    const first = page.locator("#records tbody tr").first();
    await first.waitFor({ timeout: 10_000 });
    const data = await first.locator("td.data").textContent();
    assert.match(data, /"item": "coffee"/);

    mkdirSync("../../target", { recursive: true });
    await page.screenshot({ path: "../../target/console.png" });
  } finally {
    await browser.close();
  }
});
