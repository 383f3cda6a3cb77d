//! The `sync-floor` workload: what this machine allows for durable single-record puts, with
//! nothing of Kinesis in the way. A minimal server runs in this process on its own two-worker
//! runtime: clients send fixed 128-byte frames over loopback TCP, the server writes each to a
//! file and answers 8 bytes once an `fdatasync` covers it (group commit). No HTTP, no JSON, no
//! hashing, no sequence numbers: any real server does strictly more work per request, so its
//! PutRecord rate at the same connection count stays under this one.
//!
//! Designs (`--design`):
//! - `none`: no sync; the request/response cost alone.
//! - `per-shard`: four files, a frame to a random one, two sync threads taking dirty files
//!   from a queue (Rivulet's design).
//! - `journal`: one file for every frame and one sync thread, so one sync covers every
//!   request waiting; the design that measured best here for single-record puts.
//! - `journal-zeroed`: the same, with the file's first `ZEROED_BYTES` written with zeros and
//!   synced before the run, so a sync overwrites allocated blocks instead of allocating them
//!   (no file-system journal commit per sync on ext4): what a store that recycles zero-filled
//!   journal files could reach.
//! - `http-journal`: the `journal` design behind HTTP/1.1 (hyper's server, as Rivulet's), the
//!   clients sending the bytes of the PutRecord workload's requests (the same headers and JSON
//!   body, on raw connections as its generator does) and getting a PutRecord-sized JSON answer;
//!   the body is stored as it came, not parsed. What any HTTP server with group commit costs
//!   here before its protocol's own work: the part of the gap to `journal` that is HTTP's.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

const FRAME_BYTES: usize = 128;
/// Files are extended this far up front (sparse), as Rivulet preallocates its active segment,
/// so a sync does not also commit a new file size.
const PREALLOCATE_BYTES: u64 = 1 << 30;
/// Written with zeros up front by `journal-zeroed`: two million frames, more than a run writes.
const ZEROED_BYTES: u64 = 256 << 20;

/// How the floor server makes frames durable.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Design {
    None,
    PerShard,
    Journal,
    JournalZeroed,
    HttpJournal,
}

impl Design {
    fn files(self) -> usize {
        match self {
            Design::Journal | Design::JournalZeroed | Design::HttpJournal => 1,
            Design::None | Design::PerShard => 4,
        }
    }

    fn sync_threads(self) -> usize {
        match self {
            Design::None => 0,
            Design::PerShard => 2,
            Design::Journal | Design::JournalZeroed | Design::HttpJournal => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Design::None => "none",
            Design::PerShard => "per-shard",
            Design::Journal => "journal",
            Design::JournalZeroed => "journal-zeroed",
            Design::HttpJournal => "http-journal",
        }
    }
}

/// One file: its written end (under the lock, with whether it is queued for a sync) and its
/// durable end, which the request tasks wait on.
struct FloorFile {
    file: File,
    written: Mutex<(u64, bool)>,
    durable: watch::Sender<u64>,
}

struct Floor {
    files: Vec<FloorFile>,
    sync: bool,
    queue: Mutex<(VecDeque<usize>, bool)>,
    wake: Condvar,
    syncs: AtomicU64,
    /// A sync failed: the waiting requests end with an error instead of hanging.
    failed: AtomicBool,
}

impl Floor {
    /// Writes a frame at its file's end; returns the end a sync must reach.
    fn append(&self, index: usize, frame: &[u8]) -> std::io::Result<u64> {
        let file = &self.files[index];
        let mut written = file.written.lock().unwrap_or_else(|e| e.into_inner());
        file.file.write_all_at(frame, written.0)?;
        written.0 += frame.len() as u64;
        let end = written.0;
        if !self.sync {
            file.durable.send_replace(end);
        } else if !written.1 {
            written.1 = true;
            drop(written);
            self.enqueue(index);
        }
        Ok(end)
    }

    fn enqueue(&self, index: usize) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.0.push_back(index);
        drop(queue);
        self.wake.notify_one();
    }

    /// A sync thread: sync the next dirty file, publish, and queue it again if frames came
    /// in meanwhile; until stopped.
    fn run_sync(&self) -> std::io::Result<()> {
        loop {
            let index = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(index) = queue.0.pop_front() {
                        break index;
                    }
                    if queue.1 {
                        return Ok(());
                    }
                    queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
            };
            // The file stays marked queued while its sync runs, so no other thread syncs it
            // at the same time; frames written meanwhile are picked up right after.
            let file = &self.files[index];
            let end = file.written.lock().unwrap_or_else(|e| e.into_inner()).0;
            if let Err(error) = file.file.sync_data() {
                self.failed.store(true, Ordering::SeqCst);
                for file in &self.files {
                    file.durable.send_modify(|_| {});
                }
                return Err(error);
            }
            self.syncs.fetch_add(1, Ordering::Relaxed);
            file.durable.send_if_modified(|durable| {
                let advanced = end > *durable;
                if advanced {
                    *durable = end;
                }
                advanced
            });
            let more = {
                let mut written = file.written.lock().unwrap_or_else(|e| e.into_inner());
                let more = written.0 > end;
                written.1 = more;
                more
            };
            if more {
                self.enqueue(index);
            }
        }
    }

    /// Waits until file `index` is durable up to `end`; fails if a sync failed.
    async fn wait_durable(&self, index: usize, end: u64) -> std::io::Result<()> {
        let mut durable = self.files[index].durable.subscribe();
        let failed = &self.failed;
        if durable
            .wait_for(|d| *d >= end || failed.load(Ordering::SeqCst))
            .await
            .is_err()
            || failed.load(Ordering::SeqCst)
        {
            return Err(std::io::Error::other("sync failed"));
        }
        Ok(())
    }

    fn stop(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.wake.notify_all();
    }
}

/// The result of one floor run.
pub struct FloorResult {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests_per_sync: Option<f64>,
}

/// Runs the floor server and `connections` clients for `seconds`, with the files in a fresh
/// directory under `dir` (removed afterwards).
pub async fn run(
    design: Design,
    connections: usize,
    seconds: u64,
    dir: &Path,
) -> anyhow::Result<FloorResult> {
    let dir = dir.join(format!("rivulet-sync-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(design, connections, seconds, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    design: Design,
    connections: usize,
    seconds: u64,
    dir: &Path,
) -> anyhow::Result<FloorResult> {
    let files = (0..design.files())
        .map(|i| {
            let path: PathBuf = dir.join(format!("{i}.log"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            if design == Design::JournalZeroed {
                let zeros = vec![0u8; 1 << 20];
                for at in (0..ZEROED_BYTES).step_by(zeros.len()) {
                    file.write_all_at(&zeros, at)?;
                }
            }
            file.set_len(PREALLOCATE_BYTES)?;
            file.sync_all()?;
            anyhow::Ok(FloorFile {
                file,
                written: Mutex::new((0, false)),
                durable: watch::Sender::new(0),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let floor = Arc::new(Floor {
        files,
        sync: design != Design::None,
        queue: Mutex::new((VecDeque::new(), false)),
        wake: Condvar::new(),
        syncs: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    });
    let sync_threads = (0..design.sync_threads())
        .map(|_| {
            let floor = floor.clone();
            std::thread::spawn(move || floor.run_sync())
        })
        .collect::<Vec<_>>();

    // The server: its own runtime with two workers, on its own thread, as a server process
    // would have; it stops when `stop_server` fires.
    let (addr_tx, addr_rx) = oneshot::channel();
    let (stop_server, stopped) = oneshot::channel::<()>();
    let server_floor = floor.clone();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let _ = addr_tx.send(listener.local_addr()?);
            let accept = async {
                loop {
                    let (socket, _) = listener.accept().await?;
                    socket.set_nodelay(true)?;
                    if design == Design::HttpJournal {
                        tokio::spawn(serve_http(server_floor.clone(), socket));
                    } else {
                        tokio::spawn(serve(server_floor.clone(), socket));
                    }
                }
            };
            tokio::select! {
                result = accept => result,
                _ = stopped => anyhow::Ok(()),
            }
        })
    });
    let outcome = clients(addr_rx, connections, seconds, design).await;

    // Stopped and joined whatever happened to the clients, so nothing is left running.
    let _ = stop_server.send(());
    floor.stop();
    tokio::task::spawn_blocking(move || {
        server
            .join()
            .map_err(|_| anyhow::anyhow!("the floor server panicked"))??;
        for thread in sync_threads {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("a floor sync thread panicked"))??;
        }
        anyhow::Ok(())
    })
    .await??;
    let (mut all, elapsed) = outcome?;
    all.sort_by(f64::total_cmp);
    let syncs = floor.syncs.load(Ordering::Relaxed);
    Ok(FloorResult {
        requests_per_s: (all.len() as f64 / elapsed).round(),
        p50_ms: crate::percentile(&all, 0.5),
        p99_ms: crate::percentile(&all, 0.99),
        requests_per_sync: (syncs > 0).then(|| all.len() as f64 / syncs as f64),
    })
}

/// The clients: each sends a frame and waits for its answer, until `seconds` have passed.
/// Every latency in ms, and the seconds the run took.
async fn clients(
    addr: oneshot::Receiver<std::net::SocketAddr>,
    connections: usize,
    seconds: u64,
    design: Design,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let addr = addr.await.context("the floor server did not start")?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients = (0..connections)
        .map(|c| {
            let stop = stop.clone();
            if design == Design::HttpJournal {
                return tokio::spawn(http_client(addr, c, stop));
            }
            tokio::spawn(async move {
                let mut socket = tokio::net::TcpStream::connect(addr).await?;
                socket.set_nodelay(true)?;
                let mut latencies = Vec::new();
                let mut frame = [b'x'; FRAME_BYTES];
                let mut reply = [0u8; 8];
                let mut state = c as u64 + 1;
                while !stop.load(Ordering::Relaxed) {
                    // A cheap xorshift picks the file, as partition keys spread over shards.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    frame[0] = state as u8;
                    let t = Instant::now();
                    socket.write_all(&frame).await?;
                    socket.read_exact(&mut reply).await?;
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await??);
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

/// One client of `http-journal`: the PutRecord workload's requests, byte for byte.
async fn http_client(
    addr: std::net::SocketAddr,
    c: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<f64>> {
    let host = addr.to_string();
    let mut connection = crate::RawConnection::connect(&host).await?;
    let mut requests = crate::PutRecordRequests::new(&host, "bench", c, 100);
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let request = requests.next_request();
        let t = Instant::now();
        let status = connection.call(request).await?;
        anyhow::ensure!(status == 200, "the floor answered {status}");
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(latencies)
}

/// `http-journal`'s answer: the size and type of a PutRecord answer.
const HTTP_REPLY: &[u8] = b"{\"ShardId\":\"shardId-000000000000\",\"SequenceNumber\":\"\
    49671234567890123456789012345678901234567890123456\"}";

/// One `http-journal` connection: each request's body is appended as it came, and answered
/// once durable.
async fn serve_http(floor: Arc<Floor>, socket: tokio::net::TcpStream) -> std::io::Result<()> {
    use http_body_util::BodyExt;
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let floor = floor.clone();
            async move {
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .map_err(std::io::Error::other)?
                    .to_bytes();
                let end = floor.append(0, &body)?;
                floor.wait_durable(0, end).await?;
                let mut response = http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(HTTP_REPLY),
                ));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-amz-json-1.1"),
                );
                Ok::<_, std::io::Error>(response)
            }
        });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
        .await
        .map_err(std::io::Error::other)
}

/// One connection: read a frame, append it, wait until it is durable, answer.
async fn serve(floor: Arc<Floor>, mut socket: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut frame = [0u8; FRAME_BYTES];
    loop {
        if socket.read_exact(&mut frame).await.is_err() {
            return Ok(());
        }
        let index = frame[0] as usize % floor.files.len();
        let end = floor.append(index, &frame)?;
        floor.wait_durable(index, end).await?;
        socket.write_all(&end.to_le_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every design answers requests, and the syncing ones report how many each sync covered,
    /// and leave no files behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_design_runs_and_cleans_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        for design in [
            Design::None,
            Design::PerShard,
            Design::Journal,
            Design::JournalZeroed,
            Design::HttpJournal,
        ] {
            let result = run(design, 4, 1, dir.path()).await.expect("floor run");
            assert!(result.requests_per_s > 0.0, "{design:?} answered nothing");
            assert!(result.p50_ms <= result.p99_ms);
            match design {
                Design::None => assert!(result.requests_per_sync.is_none()),
                _ => assert!(
                    result.requests_per_sync.is_some_and(|n| n > 0.5),
                    "{design:?}: {:?}",
                    result.requests_per_sync
                ),
            }
        }
        let left = std::fs::read_dir(dir.path()).expect("read dir").count();
        assert_eq!(left, 0, "the floor's files were not removed");
    }
}
