//! Cluster mode's roles (`serve --cluster`): every node answers every request, one of them
//! (the holder of the leader's lease) writes the metadata.
//!
//! - A node that is not the leader answers the data plane (PutRecord(s), GetRecords,
//!   GetShardIterator, SubscribeToShard) and the reads of metadata (Describe*, List*,
//!   GetResourcePolicy) itself, from its copy of the metadata. Every other operation changes
//!   metadata: it forwards the request, as the client sent it, to the leader over NATS
//!   (`<prefix>.ctl.<leader>`), which answers it as if it had come to it directly; the
//!   follower then waits until its own copy of the metadata holds the change, so that its
//!   client reads its own writes, and passes the answer on.
//! - The leader runs the tick (lifecycle steps, resharding, retention, on-demand scaling,
//!   consumer lifecycles). Switching the engines' role with the lease, following the
//!   metadata and sharing throughput use are `rivulet_cluster::roles`: they need the engine
//!   and NATS, not HTTP. This module is what needs the server's own dispatch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use rivulet_cluster::store::ClusterStore;
use rivulet_engine::Engine;
use rivulet_protocol::{AwsError, Format};
use serde::{Deserialize, Serialize};

use crate::api;

/// How long a forwarded request may take, leader changes included.
const FORWARD_DEADLINE: Duration = Duration::from_secs(30);
/// How long a leader keeps the answer to a forwarded request, for a retry of it.
const ANSWER_KEPT: Duration = Duration::from_secs(300);
/// How long one forwarded request waits for the leader's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// A forwarded queue Receive's answer: its long poll (up to 20 s) and then some.
const FORWARD_RECEIVE_TIMEOUT: Duration = Duration::from_secs(25);

/// A node's part in the cluster.
#[derive(Clone)]
pub struct Cluster {
    pub store: Arc<ClusterStore>,
    /// The answers this node gave as the leader, by forwarded request id: a follower that
    /// heard nothing asks again with the same id, and gets the same answer, the request
    /// done once.
    answered: Arc<parking_lot::Mutex<HashMap<String, Kept>>>,
}

/// An answer to a forwarded request, as kept for a retry (or being made).
type Kept = (tokio::time::Instant, Arc<tokio::sync::OnceCell<Answer>>);

/// Operations every node answers itself: the data plane and reads of metadata.
pub fn answers_locally(operation: &str) -> bool {
    matches!(
        operation,
        "PutRecord"
            | "PutRecords"
            | "GetRecords"
            | "GetShardIterator"
            | "SubscribeToShard"
            | "GetResourcePolicy"
    ) || operation.starts_with("Describe")
        || operation.starts_with("List")
}

#[derive(Serialize, Deserialize)]
struct Forwarded {
    /// The same for every attempt at one client request.
    id: String,
    account: String,
    operation: String,
    cbor: bool,
    /// The request body as the client sent it, base64.
    body: String,
}

#[derive(Serialize, Deserialize, Default, Clone)]
struct Answer {
    /// Set when the node asked is not the leader (any more): ask again.
    #[serde(default)]
    not_leader: bool,
    /// The metadata revision the leader had applied when it answered.
    #[serde(default)]
    revision: u64,
    /// The response body, base64.
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    error: Option<ForwardedError>,
}

#[derive(Serialize, Deserialize, Clone)]
struct ForwardedError {
    code: String,
    message: Option<String>,
    status: u16,
    capital_message: bool,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Cluster {
    /// This node's part, over its store.
    pub fn new(store: Arc<ClusterStore>) -> Self {
        Cluster {
            store,
            answered: Arc::default(),
        }
    }

    /// Whether this node writes metadata now.
    pub fn is_leader(&self) -> bool {
        self.store.is_leader()
    }

    /// Whether this node passes `operation` to the leader: it changes metadata, and this
    /// node does not write metadata now.
    pub fn forwards(&self, operation: &str, engine: &Engine) -> bool {
        let writes_here = self.is_leader() && engine.is_writer();
        !answers_locally(operation) && !writes_here
    }

    /// Brings this node's metadata and `engine` up to everything committed anywhere
    /// (`rivulet_cluster::roles::catch_up`): a follower's answer "no such stream" is then
    /// asked again.
    pub async fn catch_up(&self, engine: &Engine) -> bool {
        rivulet_cluster::roles::catch_up(&self.store, engine).await
    }

    /// Sends `operation` (its body as the client sent it, in `format`) to the leader and
    /// returns its answer once this node's metadata holds what it changed.
    pub async fn forward(
        &self,
        engine: &Engine,
        operation: &str,
        format: Format,
        body: &[u8],
    ) -> Result<Vec<u8>, AwsError> {
        let request = Forwarded {
            id: uuid::Uuid::new_v4().simple().to_string(),
            account: engine.config().account_id.clone(),
            operation: operation.to_string(),
            cbor: format == Format::Cbor,
            body: b64().encode(body),
        };
        let payload = serde_json::to_vec(&request)
            .map_err(|error| unavailable(format!("encoding a forwarded request: {error}")))?;
        // A queue Receive long-polls on the leader: its answer may take 20 s.
        let per_attempt = if operation.starts_with("Receive") {
            FORWARD_RECEIVE_TIMEOUT
        } else {
            FORWARD_TIMEOUT
        };
        let deadline = tokio::time::Instant::now() + FORWARD_DEADLINE + per_attempt;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable(format!("{operation}: no leader answered")));
            }
            let Some(leader) = self.store.leader_node() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let subject = self.store.control_subject(&leader);
            let answer = tokio::time::timeout(
                per_attempt,
                // The client's own request timeout (10 s) would cut a long poll short.
                self.store.client().send_request(
                    subject,
                    rivulet_cluster::async_nats::Request::new()
                        .payload(payload.clone().into())
                        .timeout(Some(per_attempt)),
                ),
            )
            .await;
            let answer: Answer = match answer {
                Ok(Ok(message)) => serde_json::from_slice(&message.payload).unwrap_or_default(),
                // No such node (it died; its lease runs out within seconds), or no answer in
                // time: ask again, with the same id, so the request is done once.
                Ok(Err(_)) | Err(_) => Answer {
                    not_leader: true,
                    ..Answer::default()
                },
            };
            if answer.not_leader {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            // Read your writes: this node's copy of the metadata first takes the change in.
            if !self
                .store
                .wait_applied(answer.revision, FORWARD_TIMEOUT)
                .await
            {
                return Err(unavailable(format!(
                    "{operation}: metadata revision {} not applied here",
                    answer.revision
                )));
            }
            engine.refresh().map_err(api::aws_error)?;
            return match (answer.body, answer.error) {
                (_, Some(error)) => Err(AwsError {
                    code: error.code,
                    message: error.message,
                    status: error.status,
                    capital_message: error.capital_message,
                }),
                (Some(body), None) => b64()
                    .decode(body)
                    .map_err(|error| unavailable(format!("a forwarded answer: {error}"))),
                (None, None) => Err(unavailable("an empty forwarded answer".to_string())),
            };
        }
    }

    /// Answers the requests other nodes forward to this one while it leads; says "not the
    /// leader" otherwise. Runs until the connection closes.
    pub async fn serve_forwarded(self, accounts: Arc<HashMap<String, Arc<Engine>>>) {
        let subject = self.store.control_subject(self.store.node_name());
        let mut requests = match self.store.client().subscribe(subject).await {
            Ok(requests) => requests,
            Err(error) => {
                tracing::error!(%error, "cannot take forwarded requests");
                return;
            }
        };
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let cluster = self.clone();
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let answer = cluster.answer(&accounts, &message.payload).await;
                let payload = serde_json::to_vec(&answer).unwrap_or_default();
                if let Err(error) = cluster.store.client().publish(reply, payload.into()).await {
                    tracing::warn!(%error, "a forwarded request's answer was not sent");
                }
            });
        }
    }

    async fn answer(&self, accounts: &HashMap<String, Arc<Engine>>, payload: &[u8]) -> Answer {
        let not_leader = Answer {
            not_leader: true,
            ..Answer::default()
        };
        let Ok(request) = serde_json::from_slice::<Forwarded>(payload) else {
            return not_leader;
        };
        let Some(engine) = accounts.get(&request.account) else {
            return not_leader;
        };
        if !self.is_leader() || !engine.is_writer() {
            return not_leader;
        }
        let cell = {
            let mut answered = self.answered.lock();
            let now = tokio::time::Instant::now();
            answered.retain(|_, (at, _)| now.duration_since(*at) < ANSWER_KEPT);
            answered
                .entry(request.id.clone())
                .or_insert_with(|| (now, Arc::default()))
                .1
                .clone()
        };
        cell.get_or_init(|| self.dispatch(engine, &request))
            .await
            .clone()
    }

    /// Answers a forwarded request as the leader.
    async fn dispatch(&self, engine: &Engine, request: &Forwarded) -> Answer {
        let format = if request.cbor {
            Format::Cbor
        } else {
            Format::Json
        };
        let answered = match b64().decode(&request.body) {
            Ok(body) => match rivulet_protocol::decode_request(&request.operation, format, &body) {
                Ok(input) => {
                    api::dispatch(
                        engine,
                        &request.operation,
                        &input,
                        crate::http::now_ms(),
                        format,
                    )
                    .await
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(unavailable(format!("a forwarded body: {error}"))),
        };
        let revision = self.store.applied();
        match answered {
            Ok(body) => Answer {
                revision,
                body: Some(b64().encode(body)),
                ..Answer::default()
            },
            Err(error) => Answer {
                revision,
                error: Some(ForwardedError {
                    code: error.code,
                    message: error.message,
                    status: error.status,
                    capital_message: error.capital_message,
                }),
                ..Answer::default()
            },
        }
    }
}

/// An answer for a request the cluster could not serve now; the SDKs retry it.
fn unavailable(message: String) -> AwsError {
    tracing::error!(%message, "cluster request failed");
    AwsError::internal("Internal Service Failure")
}
