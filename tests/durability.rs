//! Durability: data survives a clean restart and a kill -9 under concurrent write load.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};

use crate::util::{Process, TestServer, client};

/// Every record of a stream, per shard in shard order: (shard, partition key, data, sequence).
async fn read_all(c: &Client, stream: &str) -> Vec<(String, String, Vec<u8>, String)> {
    let mut out = Vec::new();
    for shard in crate::util::shards_of(c, stream).await {
        let mut it = c
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator")
            .shard_iterator()
            .map(str::to_string);
        while let Some(iterator) = it {
            let page = c
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await
                .expect("get records");
            for r in page.records() {
                out.push((
                    shard.shard_id().to_string(),
                    r.partition_key().to_string(),
                    r.data().as_ref().to_vec(),
                    r.sequence_number().to_string(),
                ));
            }
            it = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator().map(str::to_string)
            };
        }
    }
    out
}

#[tokio::test]
async fn records_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::on_disk(dir.path()).await;
    t.client
        .create_stream()
        .stream_name("d")
        .shard_count(2)
        .send()
        .await
        .unwrap();
    for batch in 0..4 {
        let entries = (0..250).map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("{batch}-{i}"))
                .data(Blob::new(format!("payload {batch} {i}")))
                .build()
                .unwrap()
        });
        t.client
            .put_records()
            .stream_name("d")
            .set_records(Some(entries.collect()))
            .send()
            .await
            .unwrap();
    }
    let before = read_all(&t.client, "d").await;
    assert_eq!(before.len(), 1000);
    t.stop().await;

    let t = TestServer::on_disk(dir.path()).await;
    let after = read_all(&t.client, "d").await;
    assert_eq!(
        before, after,
        "every record back, in order, with the same sequence numbers"
    );
    let more = t
        .client
        .put_record()
        .stream_name("d")
        .partition_key("0-0")
        .data(Blob::new("new"))
        .send()
        .await
        .unwrap();
    let last_same_shard = after.iter().rfind(|r| r.0 == more.shard_id()).unwrap();
    let (a, b) = (&last_same_shard.3, more.sequence_number());
    assert!(
        (b.len(), b) > (a.len(), a.as_str()),
        "numbering continues after a restart"
    );
    t.stop().await;
}

fn spawn_server(dir: &std::path::Path) -> Process {
    spawn_server_with(dir, &[])
}

/// `spawn_server` with more flags.
fn spawn_server_with(dir: &std::path::Path, extra: &[&str]) -> Process {
    let dir = dir.to_string_lossy();
    let mut args = vec![
        "--create-stream-ms",
        "0",
        "--limits",
        "off",
        "--log",
        "warn",
        "--data-dir",
        dir.as_ref(),
    ];
    args.extend_from_slice(extra);
    Process::spawn(&args)
}

/// Kill -9 a server under concurrent write load, many times; every acknowledged record must be
/// there afterwards, exactly once, and in acknowledgement order within each writer and shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_under_load_loses_no_acknowledged_record() {
    const ROUNDS: usize = 6;
    const WRITERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut first = true;
    for round in 0..ROUNDS {
        let mut server = spawn_server(dir.path());
        let c = client(server.addr);
        if first {
            c.create_stream()
                .stream_name("crash")
                .shard_count(2)
                .send()
                .await
                .unwrap();
            first = false;
        }
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let c = c.clone();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("w{w}");
                    let data = format!("r{round}-w{w}-n{n}");
                    let entries = vec![
                        PutRecordsRequestEntry::builder()
                            .partition_key(&key)
                            .data(Blob::new(format!("{data}-a")))
                            .build()
                            .unwrap(),
                        PutRecordsRequestEntry::builder()
                            .partition_key(&key)
                            .data(Blob::new(format!("{data}-b")))
                            .build()
                            .unwrap(),
                    ];
                    match c
                        .put_records()
                        .stream_name("crash")
                        .set_records(Some(entries))
                        .send()
                        .await
                    {
                        Ok(_) => {
                            let mut acked = acked.lock().unwrap();
                            acked.push((key.clone(), format!("{data}-a")));
                            acked.push((key, format!("{data}-b")));
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        // Killed after a number of acknowledgements, not after a time, so that a slow machine
        // changes nothing; the number varies by round so the kill lands at different points.
        let target = acked.lock().unwrap().len() + 2 * (20 + 17 * round % 60);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while acked.lock().unwrap().len() < target {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the writers stalled"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.kill();
        for task in tasks {
            let _ = task.await;
        }
    }
    let mut server = spawn_server(dir.path());
    let c = client(server.addr);
    let stored = read_all(&c, "crash").await;
    server.kill();

    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 100,
        "the load generator made progress: {}",
        acked.len()
    );
    let stored_data: Vec<String> = stored
        .iter()
        .map(|r| String::from_utf8(r.2.clone()).unwrap())
        .collect();
    let unique: HashSet<&String> = stored_data.iter().collect();
    assert_eq!(unique.len(), stored_data.len(), "no record is stored twice");
    // Within each writer (one partition key, so one shard) stored order follows ack order.
    let mut position: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, data) in stored_data.iter().enumerate() {
        position.insert(data.as_str(), i);
    }
    let mut last_per_writer: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, data) in acked.iter() {
        let at = *position
            .get(data.as_str())
            .unwrap_or_else(|| panic!("acknowledged record {data} lost"));
        if let Some(previous) = last_per_writer.insert(key.as_str(), at) {
            assert!(previous < at, "{data} stored out of acknowledgement order");
        }
    }
}

/// One record PutRecords acknowledged: writer `writer`'s record number `n`, at `shard` and
/// `sequence`.
struct Ack {
    writer: usize,
    n: u64,
    shard: String,
    sequence: String,
}

/// What one load writer did until the server went away.
struct WriterLog {
    writer: usize,
    acks: Vec<Ack>,
    /// Records answered with an ErrorCode (not written, never retried).
    rejected: Vec<u64>,
    /// The first record number of the request that failed, and the error.
    failed_at: u64,
    error: String,
    /// Whether the request failed before the test sent the kill (it should not have).
    failed_before_kill: bool,
    /// The fewest distinct shards one acknowledged request wrote to.
    fewest_shards: usize,
    batches: usize,
}

/// A record's partition key and data: its writer and number. Keys are unique, so their MD5
/// spreads each request's records over the whole hash key space.
fn load_record(writer: usize, n: u64) -> String {
    format!("w{writer}-n{n}")
}

fn parse_load_record(text: &str) -> (usize, u64) {
    let (writer, n) = text
        .strip_prefix('w')
        .and_then(|t| t.split_once("-n"))
        .unwrap_or_else(|| panic!("not a load record: {text:?}"));
    (writer.parse().unwrap(), n.parse().unwrap())
}

/// Writes batches of `batch` records to `stream`, one request at a time, counting each
/// acknowledged request in `acked`, until a request fails (the kill).
async fn write_until_failure(
    c: Client,
    stream: &'static str,
    writer: usize,
    batch: u64,
    acked: Arc<tokio::sync::watch::Sender<usize>>,
    killed: Arc<AtomicBool>,
) -> WriterLog {
    let mut log = WriterLog {
        writer,
        acks: Vec::new(),
        rejected: Vec::new(),
        failed_at: 0,
        error: String::new(),
        failed_before_kill: false,
        fewest_shards: usize::MAX,
        batches: 0,
    };
    let mut n = 0;
    loop {
        let entries = (n..n + batch)
            .map(|m| {
                PutRecordsRequestEntry::builder()
                    .partition_key(load_record(writer, m))
                    .data(Blob::new(load_record(writer, m)))
                    .build()
                    .unwrap()
            })
            .collect();
        let answer = match c
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
        {
            Ok(answer) => answer,
            Err(error) => {
                log.failed_before_kill = !killed.load(Ordering::SeqCst);
                log.failed_at = n;
                log.error = aws_sdk_kinesis::error::DisplayErrorContext(error).to_string();
                return log;
            }
        };
        assert_eq!(answer.records().len() as u64, batch, "one result per entry");
        let mut shards = HashSet::new();
        for (m, result) in (n..).zip(answer.records()) {
            match (
                result.error_code(),
                result.shard_id(),
                result.sequence_number(),
            ) {
                (None, Some(shard), Some(sequence)) => {
                    shards.insert(shard);
                    log.acks.push(Ack {
                        writer,
                        n: m,
                        shard: shard.to_string(),
                        sequence: sequence.to_string(),
                    });
                }
                (Some(_), _, _) => log.rejected.push(m),
                _ => panic!("result {m} of writer {writer} has no error and no position"),
            }
        }
        log.fewest_shards = log.fewest_shards.min(shards.len());
        log.batches += 1;
        n += batch;
        acked.send_modify(|count| *count += 1);
    }
}

/// One shard as read back: its id, hash key range and records (partition key, data, sequence
/// number) in order.
struct ShardRead {
    id: String,
    hash_range: (u128, u128),
    records: Vec<(String, String, String)>,
}

/// Every shard of `stream` read from TRIM_HORIZON until caught up, `readers` shards at a time.
async fn read_every_shard(c: &Client, stream: &str, readers: usize) -> Vec<ShardRead> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            None => c.list_shards().stream_name(stream),
            Some(token) => c.list_shards().next_token(token),
        };
        let page = request.send().await.expect("list shards");
        shards.extend(page.shards().iter().map(|s| {
            let range = s.hash_key_range().expect("hash key range");
            (
                s.shard_id().to_string(),
                (
                    range.starting_hash_key().parse::<u128>().unwrap(),
                    range.ending_hash_key().parse::<u128>().unwrap(),
                ),
            )
        }));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let shards = Arc::new(shards);
    let mut tasks = Vec::new();
    for reader in 0..readers {
        let (c, shards, stream) = (c.clone(), shards.clone(), stream.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for (id, hash_range) in shards.iter().skip(reader).step_by(readers) {
                let mut records = Vec::new();
                let mut iterator = Some(crate::util::trim_horizon(&c, &stream, id).await);
                let mut empty_pages = 0;
                while let Some(it) = iterator {
                    let page = c
                        .get_records()
                        .shard_iterator(&it)
                        .send()
                        .await
                        .expect("get records");
                    for r in page.records() {
                        records.push((
                            r.partition_key().to_string(),
                            String::from_utf8(r.data().as_ref().to_vec()).expect("utf-8 data"),
                            r.sequence_number().to_string(),
                        ));
                    }
                    let caught_up =
                        page.records().is_empty() && page.millis_behind_latest() == Some(0);
                    empty_pages = if page.records().is_empty() {
                        empty_pages + 1
                    } else {
                        0
                    };
                    assert!(empty_pages < 100, "shard {id}: empty pages, not caught up");
                    iterator = match caught_up {
                        true => None,
                        false => page.next_shard_iterator().map(str::to_string),
                    };
                }
                out.push(ShardRead {
                    id: id.clone(),
                    hash_range: *hash_range,
                    records,
                });
            }
            out
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.extend(task.await.expect("reader"));
    }
    out
}

/// The shards' hash key ranges, ascending: (first hash, last hash, shard id).
fn hash_ranges(shards: &[ShardRead]) -> Vec<(u128, u128, &str)> {
    let mut ranges: Vec<_> = shards
        .iter()
        .map(|s| (s.hash_range.0, s.hash_range.1, s.id.as_str()))
        .collect();
    ranges.sort_unstable();
    ranges
}

/// The shard whose hash key range (of `ranges`, ascending) holds `key`'s MD5.
fn owner<'a>(ranges: &[(u128, u128, &'a str)], key: &str) -> &'a str {
    use md5::Digest;
    let hash = u128::from_be_bytes(md5::Md5::digest(key.as_bytes()).into());
    let at = ranges.partition_point(|r| r.1 < hash);
    match ranges.get(at) {
        Some(&(first, _, id)) if first <= hash => id,
        _ => panic!("no shard owns the hash of {key}"),
    }
}

/// Checks a stream read back after kills against what the writers were told: every
/// acknowledged record at its acknowledged shard and sequence number, nothing twice, sequence
/// numbers increasing within each shard, each writer's records in its order within each shard,
/// every record in the shard its key routes to, and nothing stored that was never sent (only a
/// request cut by a kill may have left records nobody acknowledged, each shard's share of it
/// all or nothing). Returns how many stored records nobody acknowledged.
fn check_after_kills(shards: &[ShardRead], logs: &[WriterLog], batch: u64) -> usize {
    let ranges = hash_ranges(shards);
    let sequence_key = |s: &str| (s.len(), s.to_string());
    let mut stored: HashMap<(usize, u64), (&str, &str)> = HashMap::new();
    for shard in shards {
        let mut last_sequence: Option<&str> = None;
        let mut last_per_writer: HashMap<usize, u64> = HashMap::new();
        for (key, data, sequence) in &shard.records {
            assert_eq!(key, data, "shard {}: record {sequence} damaged", shard.id);
            let (writer, n) = parse_load_record(data);
            if let Some(previous) = stored.insert((writer, n), (&shard.id, sequence)) {
                panic!(
                    "record {data} stored twice: at {previous:?} and at ({}, {sequence})",
                    shard.id
                );
            }
            if let Some(previous) = last_sequence {
                assert!(
                    sequence_key(previous) < sequence_key(sequence),
                    "shard {}: sequence number {sequence} follows {previous}",
                    shard.id
                );
            }
            last_sequence = Some(sequence);
            if let Some(previous) = last_per_writer.insert(writer, n) {
                assert!(
                    previous < n,
                    "shard {}: writer {writer}'s record {n} stored after its record {previous}",
                    shard.id
                );
            }
            assert_eq!(
                owner(&ranges, key),
                shard.id,
                "record {data} stored in a shard that does not own its key"
            );
        }
    }
    let mut acknowledged = HashSet::new();
    for log in logs {
        for ack in &log.acks {
            let name = load_record(ack.writer, ack.n);
            let at = stored
                .get(&(ack.writer, ack.n))
                .unwrap_or_else(|| panic!("acknowledged record {name} lost"));
            assert_eq!(
                *at,
                (ack.shard.as_str(), ack.sequence.as_str()),
                "acknowledged record {name} (shard, sequence number)"
            );
            acknowledged.insert((ack.writer, ack.n));
        }
        for n in &log.rejected {
            assert!(
                !stored.contains_key(&(log.writer, *n)),
                "record {} stored though its entry failed",
                load_record(log.writer, *n)
            );
        }
    }
    // The rest came from the requests the kills cut: per shard, all of a request or none.
    let cut: HashMap<usize, u64> = logs.iter().map(|l| (l.writer, l.failed_at)).collect();
    let mut shares: HashMap<(usize, &str), (usize, usize)> = HashMap::new();
    for (&writer, &first) in &cut {
        for n in first..first + batch {
            let name = load_record(writer, n);
            let share = shares.entry((writer, owner(&ranges, &name))).or_default();
            share.0 += 1;
            share.1 += usize::from(stored.contains_key(&(writer, n)));
        }
    }
    let mut unacknowledged = 0;
    for &(writer, n) in stored.keys() {
        if acknowledged.contains(&(writer, n)) {
            continue;
        }
        let first = cut.get(&writer).copied();
        assert!(
            first.is_some_and(|first| (first..first + batch).contains(&n)),
            "record {} stored but never acknowledged, and not from a request a kill cut",
            load_record(writer, n)
        );
        unacknowledged += 1;
    }
    for ((writer, shard), (sent, kept)) in shares {
        assert!(
            kept == 0 || kept == sent,
            "shard {shard} kept {kept} of the {sent} records writer {writer}'s cut request \
             sent it"
        );
    }
    unacknowledged
}

/// The numbers of the journal files in a data dir (named `<number>.jnl`, numbered in order).
fn journal_files(dir: &std::path::Path) -> Vec<u64> {
    let mut numbers: Vec<u64> = walk(dir)
        .iter()
        .filter(|path| path.extension().is_some_and(|e| e == "jnl"))
        .filter_map(|path| path.file_stem()?.to_str()?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers
}

/// Kill -9 under load on a 1,000-shard stream, twice: four writers send 500-record PutRecords
/// (each touching hundreds of shards) until the kill, which comes after a count of
/// acknowledged requests, not after a time. After each restart every shard is read back.
/// The journal's files are 1 MiB, so checkpoints (one `syncfs` over the shards' segments
/// where trusted) retire files while the load runs, and kills land around them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_on_a_thousand_shards_loses_no_acknowledged_record() {
    const STREAM: &str = "wide";
    const SHARDS: i32 = 1000;
    const ROUNDS: usize = 2;
    const WRITERS: usize = 4;
    const BATCH: u64 = 500;
    const KILL_AFTER: usize = 40;
    const READERS: usize = 8;
    let started = std::time::Instant::now();
    const SMALL_JOURNAL: &[&str] = &["--journal-file-mib", "1"];
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server_with(dir.path(), SMALL_JOURNAL);
    let c = client(server.addr);
    c.create_stream()
        .stream_name(STREAM)
        .shard_count(SHARDS)
        .send()
        .await
        .expect("create");
    crate::util::wait_active(&c, STREAM).await;
    let mut logs: Vec<WriterLog> = Vec::new();
    // The oldest journal file left at the last kill.
    let mut retired = 0;
    for round in 0..ROUNDS {
        let (acked, mut acked_seen) = tokio::sync::watch::channel(0);
        let acked = Arc::new(acked);
        let killed = Arc::new(AtomicBool::new(false));
        // One attempt per request: a retried PutRecords is a second request, which may store
        // its records twice.
        let writes = crate::util::client_without_retries(server.addr);
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(write_until_failure(
                    writes.clone(),
                    STREAM,
                    round * WRITERS + w,
                    BATCH,
                    acked.clone(),
                    killed.clone(),
                ))
            })
            .collect();
        drop(acked);
        // The kill comes once a checkpoint has retired journal files in this round (seen
        // between acknowledgements), then `round * 15` acknowledgements later, so the rounds'
        // kills land at different distances from it. Err: every writer stopped (their
        // senders are gone) before that.
        let mut wanted = KILL_AFTER;
        let mut reached = loop {
            if acked_seen.wait_for(|&n| n >= wanted).await.is_err() {
                break false;
            }
            if journal_files(dir.path()).first().copied().unwrap_or(0) > retired {
                break true;
            }
            assert!(
                wanted < 20_000,
                "no checkpoint after {wanted} acknowledgements"
            );
            wanted += 5;
        };
        let after = *acked_seen.borrow() + round * 15;
        reached = reached && acked_seen.wait_for(|&n| n >= after).await.is_ok();
        killed.store(true, Ordering::SeqCst);
        server.kill();
        let mut round_logs = Vec::new();
        for task in tasks {
            round_logs.push(task.await.expect("writer"));
        }
        for log in &round_logs {
            assert!(
                !log.failed_before_kill,
                "writer {} failed before the kill: {}",
                log.writer, log.error
            );
        }
        assert!(
            reached,
            "the writers stopped before {KILL_AFTER} acknowledgements"
        );
        logs.extend(round_logs);
        // Files numbered below the oldest one left were retired by a checkpoint under load.
        let journal = journal_files(dir.path());
        let oldest = journal.first().copied().unwrap_or(0);
        assert!(
            oldest > retired,
            "no checkpoint retired journal files during round {round}: {journal:?}"
        );
        retired = oldest;

        server = spawn_server_with(dir.path(), SMALL_JOURNAL);
        let c = client(server.addr);
        let shards = read_every_shard(&c, STREAM, READERS).await;
        assert_eq!(shards.len(), SHARDS as usize);
        let unacknowledged = check_after_kills(&shards, &logs, BATCH);
        let acks: usize = logs.iter().map(|l| l.acks.len()).sum();
        let batches: usize = logs.iter().map(|l| l.batches).sum();
        let fewest = logs.iter().map(|l| l.fewest_shards).min().unwrap();
        assert!(
            fewest >= 300,
            "a {BATCH}-record request touched only {fewest} shards"
        );
        let empty = shards.iter().filter(|s| s.records.is_empty()).count();
        eprintln!(
            "round {round}: {batches} acknowledged requests, {acks} acknowledged records, \
             {unacknowledged} stored unacknowledged, {empty} empty shards, \
             each request touching >= {fewest} shards, journal files {journal:?} at the kill, \
             {:.1?} so far",
            started.elapsed()
        );
    }
}

/// A flipped bit in a stored batch: the server starts, reports the damage on the read that meets
/// it, and keeps serving every other record.
#[tokio::test]
async fn corrupted_batch_is_reported_and_the_rest_is_served() {
    use crate::util::call;
    let dir = tempfile::tempdir().expect("tempdir");
    let markers = [
        "first-record-aaaa",
        "second-record-bbbb",
        "third-record-cccc",
    ];
    let mut sequences = Vec::new();
    {
        let t = TestServer::on_disk(dir.path()).await;
        let c = &t.client;
        c.create_stream()
            .stream_name("hurt")
            .shard_count(1)
            .send()
            .await
            .expect("create");
        c.create_stream()
            .stream_name("fine")
            .shard_count(1)
            .send()
            .await
            .expect("create");
        for (stream, marker) in markers
            .iter()
            .map(|m| ("hurt", *m))
            .chain([("fine", "untouched")])
        {
            let put = c
                .put_record()
                .stream_name(stream)
                .partition_key("k")
                .data(Blob::new(marker.as_bytes()))
                .send()
                .await
                .expect("put");
            sequences.push(put.sequence_number().to_string());
        }
        t.stop().await;
    }
    // Flip one bit inside the second record's data, wherever the segment holds it.
    let mut flipped = 0;
    for entry in walk(dir.path()) {
        if entry.extension().is_some_and(|e| e == "seg") {
            let mut bytes = std::fs::read(&entry).expect("read segment");
            if let Some(at) = bytes
                .windows(markers[1].len())
                .position(|w| w == markers[1].as_bytes())
            {
                bytes[at + 3] ^= 0x10;
                std::fs::write(&entry, &bytes).expect("write segment");
                flipped += 1;
            }
        }
    }
    assert_eq!(flipped, 1, "the record's bytes are in one segment");

    let t = TestServer::on_disk(dir.path()).await;
    let iterator = |kind: &str, extra: String| {
        format!(
            r#"{{"StreamName":"hurt","ShardId":"shardId-000000000000","ShardIteratorType":"{kind}"{extra}}}"#
        )
    };
    let first = call(
        t.addr,
        "GetShardIterator",
        &iterator("TRIM_HORIZON", String::new()),
    )
    .await;
    let it = first.json()["ShardIterator"]
        .as_str()
        .expect("iterator")
        .to_string();
    let page = call(
        t.addr,
        "GetRecords",
        &format!(r#"{{"ShardIterator":"{it}"}}"#),
    )
    .await;
    assert_eq!(page.status, 200);
    let records = page.json()["Records"].as_array().expect("records").clone();
    assert_eq!(records.len(), 1, "the read stops before the damage");
    assert_eq!(
        records[0]["SequenceNumber"].as_str(),
        Some(sequences[0].as_str())
    );
    let next = page.json()["NextShardIterator"]
        .as_str()
        .expect("next")
        .to_string();
    let damaged = call(
        t.addr,
        "GetRecords",
        &format!(r#"{{"ShardIterator":"{next}"}}"#),
    )
    .await;
    assert_eq!(damaged.status, 500);
    // As AWS sends it: no message (the segment and byte go to the server's log).
    assert_eq!(damaged.body, br#"{"__type":"InternalFailure"}"#);
    // Past the damage, and in other streams, everything is served.
    let after = call(
        t.addr,
        "GetShardIterator",
        &iterator(
            "AT_SEQUENCE_NUMBER",
            format!(r#","StartingSequenceNumber":"{}""#, sequences[2]),
        ),
    )
    .await;
    let it = after.json()["ShardIterator"]
        .as_str()
        .expect("iterator")
        .to_string();
    let page = call(
        t.addr,
        "GetRecords",
        &format!(r#"{{"ShardIterator":"{it}"}}"#),
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.json()["Records"][0]["SequenceNumber"].as_str(),
        Some(sequences[2].as_str())
    );
    let fine = read_all(&t.client, "fine").await;
    assert_eq!(fine.len(), 1);
    assert_eq!(fine[0].2, b"untouched");
    // Writes go on.
    t.client
        .put_record()
        .stream_name("hurt")
        .partition_key("k")
        .data(Blob::new("fourth"))
        .send()
        .await
        .expect("put after damage");
    t.stop().await;
}

/// Every file under `root`.
fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
