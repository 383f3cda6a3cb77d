//! Real `nats-server` clusters on loopback, for tests and benchmarks: each server gets free
//! ports, its own store dir and `sync_interval: always` (what Rivulet requires in
//! production), and every process is killed when the [`NatsCluster`] is dropped.
//!
//! The binary is `$RIVULET_NATS_SERVER`, else the pinned one `scripts/nats-server.sh`
//! installs in `target/tools/nats`, else `nats-server` on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A running cluster of `nats-server`s.
pub struct NatsCluster {
    // Dropped first: the servers are killed before their directory is removed.
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    tls: Option<ServerTls>,
    /// What clients authenticate with, when the servers require it.
    auth: Option<ClientAuth>,
}

/// How the servers authenticate clients ([`NatsCluster::start_with_auth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatsAuth {
    /// A user NKey listed in the servers' `authorization` block.
    NKey,
    /// Operator (decentralized JWT) mode: an operator, a system account and an account with
    /// JetStream, preloaded in a memory resolver; clients bring a `.creds` file.
    Operator,
}

/// The file a client authenticates with.
#[derive(Clone, Debug)]
enum ClientAuth {
    NKey(PathBuf),
    Credentials(PathBuf),
}

/// TLS for the servers' client connections, verifying clients' certificates (PEM files).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The CA that signed the servers' and the clients' certificates.
    pub ca: PathBuf,
    /// The servers' certificate (for 127.0.0.1) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client certificate and key signed by the CA (what the harness connects with).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

struct Node {
    name: String,
    client_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `size` servers (one JetStream server without clustering when `size` is 1) and
    /// waits until JetStream can place a stream replicated on all of them.
    pub async fn start(size: usize) -> anyhow::Result<NatsCluster> {
        NatsCluster::start_with(size, None).await
    }

    /// [`NatsCluster::start`], with TLS on the client connections when given: clients must
    /// speak TLS and show a certificate the CA signed.
    pub async fn start_with(size: usize, tls: Option<ServerTls>) -> anyhow::Result<NatsCluster> {
        NatsCluster::start_with_auth(size, tls, None).await
    }

    /// [`NatsCluster::start_with`], with the servers requiring `auth` of their clients: the
    /// keys (and JWTs) are made here, and [`NatsCluster::settings`] and
    /// [`NatsCluster::connect`] use them.
    pub async fn start_with_auth(
        size: usize,
        tls: Option<ServerTls>,
        auth: Option<NatsAuth>,
    ) -> anyhow::Result<NatsCluster> {
        if size == 0 {
            bail!("a cluster needs at least one server");
        }
        let binary = find_binary()?;
        let dir = tempfile::tempdir()?;
        let ports: Vec<[u16; 3]> = (0..size)
            .map(|_| Ok([free_port()?, free_port()?, free_port()?]))
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|[_, route, _]| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let (auth_config, client_auth) = match auth {
            None => (String::new(), None),
            Some(auth) => {
                let (config, client) = auth_files(auth, dir.path())?;
                (config, Some(client))
            }
        };
        let mut nodes = Vec::new();
        for (i, [client, route, http]) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let mut config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                 max_payload: 16MB\n\
                 jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n"
            );
            if size > 1 {
                config.push_str(&format!(
                    "cluster {{\n  name: rivulet\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            if let Some(tls) = &tls {
                config.push_str(&format!(
                    "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
                    tls.cert, tls.key, tls.ca
                ));
            }
            config.push_str(&auth_config);
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, config)?;
            nodes.push(Node {
                name,
                client_port: *client,
                config: path,
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            dir,
            binary,
            nodes,
            tls,
            auth: client_auth,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", node.name)))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// The client URLs of every server, comma-separated (what `--cluster` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the server named `name` (`n1` is 0).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// The name of the server leading JetStream stream `stream`'s replicas.
    pub async fn stream_leader(
        &self,
        client: &async_nats::Client,
        stream: &str,
    ) -> anyhow::Result<String> {
        let answer = client
            .request(format!("$JS.API.STREAM.INFO.{stream}"), "".into())
            .await?;
        let info: serde_json::Value = serde_json::from_slice(&answer.payload)?;
        info.pointer("/cluster/leader")
            .and_then(|leader| leader.as_str())
            .map(str::to_owned)
            .with_context(|| format!("no leader for stream {stream}: {info}"))
    }

    /// The JetStream streams whose names start with `prefix` (e.g. `<prefix>_D_`: the
    /// Kinesis streams of a deployment).
    pub async fn stream_names(
        &self,
        client: &async_nats::Client,
        prefix: &str,
    ) -> anyhow::Result<Vec<String>> {
        let answer = client
            .request("$JS.API.STREAM.NAMES".to_string(), "".into())
            .await?;
        let names: serde_json::Value = serde_json::from_slice(&answer.payload)?;
        Ok(names
            .get("streams")
            .and_then(|streams| streams.as_array())
            .into_iter()
            .flatten()
            .filter_map(|name| name.as_str())
            .filter(|name| name.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    /// Waits until every replica of JetStream stream `stream` is current (has applied all
    /// the leader has): direct gets, which any replica may answer, then see every write
    /// acknowledged before the call.
    pub async fn wait_current(
        &self,
        client: &async_nats::Client,
        stream: &str,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = client
                .request(format!("$JS.API.STREAM.INFO.{stream}"), "".into())
                .await;
            if let Ok(answer) = answer {
                let info: serde_json::Value = serde_json::from_slice(&answer.payload)?;
                let replicas = info.pointer("/cluster/replicas").and_then(|r| r.as_array());
                let current = replicas.is_some_and(|replicas| {
                    replicas.len() + 1 == self.nodes.len()
                        && replicas.iter().all(|replica| {
                            replica.get("current").and_then(|c| c.as_bool()) == Some(true)
                                && replica.get("lag").and_then(|l| l.as_u64()).unwrap_or(0) == 0
                        })
                });
                if current {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("the replicas of {stream} did not catch up within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many servers the cluster has (running or not).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Connects a client to every server of the cluster.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect();
        let mut options = async_nats::ConnectOptions::new().retry_on_initial_connect();
        if let Some(tls) = &self.tls {
            options = options
                .require_tls(true)
                .add_root_certificates(tls.ca.clone())
                .add_client_certificate(tls.client_cert.clone(), tls.client_key.clone());
        }
        match &self.auth {
            Some(ClientAuth::NKey(seed)) => {
                options = options.nkey(std::fs::read_to_string(seed)?.trim().to_string());
            }
            Some(ClientAuth::Credentials(path)) => {
                options = options.credentials_file(path).await?;
            }
            None => {}
        }
        Ok(options.connect(urls).await?)
    }

    /// Kills server `i` at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts server `i` again, on its ports and store dir, and waits until it accepts
    /// client connections (it may still be catching up with the others).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].child.is_some() {
            bail!("server {} is running", self.nodes[i].name);
        }
        self.spawn(i)?;
        let address = format!("127.0.0.1:{}", self.nodes[i].client_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exited) = self.exited() {
                bail!("{exited}");
            }
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("server {} did not listen within 30 s", self.nodes[i].name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until JetStream places (then removes) a memory stream replicated on every
    /// server: the meta leader is elected and every peer is known.
    pub async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let client = tokio::time::timeout(within, self.connect())
            .await
            .context("no server accepted a connection")??;
        let config = serde_json::json!({
            "name": "rivulet_ready", "subjects": ["rivulet.ready"],
            "num_replicas": self.nodes.len(), "storage": "memory",
        });
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(exited) = self.exited() {
                bail!("{exited}");
            }
            let answer = client
                .request(
                    "$JS.API.STREAM.CREATE.rivulet_ready",
                    serde_json::to_vec(&config)?.into(),
                )
                .await;
            match answer {
                Ok(message) => {
                    let value: serde_json::Value = serde_json::from_slice(&message.payload)?;
                    if value.get("error").is_none() {
                        client
                            .request("$JS.API.STREAM.DELETE.rivulet_ready", "".into())
                            .await?;
                        return Ok(());
                    }
                    last = value.to_string();
                }
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("JetStream was not ready within {within:?}: {last}")
    }

    /// A server that should run but exited, with the end of its log.
    fn exited(&mut self) -> Option<String> {
        for node in &mut self.nodes {
            let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            else {
                continue;
            };
            let log_path = self.dir.path().join(format!("{}.log", node.name));
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Some(format!(
                "nats-server {} exited ({status}): {}",
                node.name,
                tail.join(" | ")
            ));
        }
        None
    }

    /// Stops every server (SIGKILL) and waits for them to exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.kill(i).await?;
        }
        Ok(())
    }

    /// Settings for a Rivulet node named `node` on this cluster, under `prefix`: as many
    /// replicas as servers (up to 3), the cluster's client credentials if it requires them,
    /// 10 s requests, 5 s to become leader.
    pub fn settings(&self, node: &str, prefix: &str) -> crate::store::ClusterSettings {
        crate::store::ClusterSettings {
            urls: self.urls().split(',').map(str::to_string).collect(),
            replicas: self.size().min(3),
            node_name: node.to_string(),
            prefix: prefix.to_string(),
            user: None,
            token: None,
            nkey_seed: match &self.auth {
                Some(ClientAuth::NKey(seed)) => Some(seed.clone()),
                _ => None,
            },
            credentials: match &self.auth {
                Some(ClientAuth::Credentials(path)) => Some(path.clone()),
                _ => None,
            },
            tls_ca: None,
            tls_client: None,
            timeout: Duration::from_secs(10),
            leader_wait: Duration::from_secs(5),
            follow_lag: Duration::ZERO,
        }
    }

    /// The directory holding the servers' configs, logs and store dirs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The `nats-server` binary to run.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("RIVULET_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let pinned =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/nats/bin/nats-server");
    if pinned.is_file() {
        return Ok(pinned);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.context(
        "no nats-server: run scripts/nats-server.sh (installs the pinned one) or set RIVULET_NATS_SERVER",
    )
}

/// A port free now and never handed out before by this process: clusters started at the same
/// time (tests run in parallel) must not pick the same port between its check and its use.
fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free port found")
}

/// A fresh user NKey seed (`SU…`), for tests that need credentials no server knows.
pub fn new_user_seed() -> String {
    nkeys::KeyPair::new_user().seed().unwrap_or_default()
}

/// Makes the keys (and JWTs) for `auth` in `dir`: the servers' configuration lines, and the
/// file a client authenticates with.
fn auth_files(auth: NatsAuth, dir: &Path) -> anyhow::Result<(String, ClientAuth)> {
    let user = nkeys::KeyPair::new_user();
    match auth {
        NatsAuth::NKey => {
            let seed = dir.join("client.nk");
            std::fs::write(&seed, format!("{}\n", user.seed()?))?;
            let config = format!(
                "authorization {{\n  users = [ {{ nkey: \"{}\" }} ]\n}}\n",
                user.public_key()
            );
            Ok((config, ClientAuth::NKey(seed)))
        }
        NatsAuth::Operator => {
            let operator = nkeys::KeyPair::new_operator();
            let system = nkeys::KeyPair::new_account();
            let account = nkeys::KeyPair::new_account();
            // Limits a JWT leaves out are 0 ("none"): every one is written, -1 for no limit.
            // JetStream is on for an account whose storage limits are not 0.
            let limits = |jetstream: bool| {
                let mut limits = serde_json::json!({
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                });
                if jetstream {
                    limits["mem_storage"] = (-1).into();
                    limits["disk_storage"] = (-1).into();
                    limits["streams"] = (-1).into();
                    limits["consumer"] = (-1).into();
                }
                serde_json::json!({
                    "limits": limits, "default_permissions": {"pub": {}, "sub": {}},
                    "type": "account", "version": 2,
                })
            };
            let operator_jwt = jwt(
                &operator,
                &operator.public_key(),
                "rivulet-test",
                serde_json::json!({
                    "system_account": system.public_key(), "type": "operator", "version": 2,
                }),
            )?;
            let system_jwt = jwt(&operator, &system.public_key(), "SYS", limits(false))?;
            let account_jwt = jwt(&operator, &account.public_key(), "RIVULET", limits(true))?;
            let user_jwt = jwt(
                &account,
                &user.public_key(),
                "rivulet",
                serde_json::json!({
                    "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                    "type": "user", "version": 2,
                }),
            )?;
            let creds = dir.join("client.creds");
            std::fs::write(
                &creds,
                format!(
                    "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
                     -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
                    user.seed()?
                ),
            )?;
            let config = format!(
                "operator: \"{operator_jwt}\"\nsystem_account: {system}\nresolver: MEMORY\n\
                 resolver_preload: {{\n  {system}: \"{system_jwt}\"\n  {account}: \"{account_jwt}\"\n}}\n",
                system = system.public_key(),
                account = account.public_key(),
            );
            Ok((config, ClientAuth::Credentials(creds)))
        }
    }
}

/// A NATS JWT (v2): `issuer` signs `subject`'s claims.
fn jwt(
    issuer: &nkeys::KeyPair,
    subject: &str,
    name: &str,
    nats: serde_json::Value,
) -> anyhow::Result<String> {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({
        // The servers do not check it; unique is enough.
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": iat, "iss": issuer.public_key(), "name": name, "sub": subject, "nats": nats,
    });
    let signed = format!(
        "{}.{}",
        b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
        b64(&serde_json::to_vec(&claims)?)
    );
    let signature = issuer.sign(signed.as_bytes())?;
    Ok(format!("{signed}.{}", b64(&signature)))
}
