//! Rivulet's cluster backend on NATS JetStream (issue 13; the design is
//! `docs/design/cluster.md`).
//!
//! This crate holds everything that speaks NATS, so that only it and the binary build
//! `async-nats`:
//! - [`batch`]: JetStream atomic batch publishes (all of a shard's records in a PutRecords land
//!   together, with consecutive stream sequences, or none do), which async-nats has no API for;
//! - [`direct`]: batched direct gets (a GetRecords is one request answered by a run of
//!   messages and an end-of-batch status), which async-nats has no API for either;
//! - [`api`]: the JetStream API's error answers, classified the way the cluster backend acts
//!   on them (a fencing conflict, a duplicate batch, contention to retry);
//! - [`meta`]: the cluster's metadata (what `MetaStore` keeps on one node) in a replicated
//!   stream, atomic commits with compare-and-set, mirrored in every node's memory;
//! - [`lease`]: leases on that metadata, with terms and fenced commits: the background
//!   leader (and later shard ownership) moving within seconds when a node dies;
//! - [`records`]: Kinesis records on JetStream (a stream per Kinesis stream, a subject per
//!   shard, a put one atomic batch, idempotent by request id; reads, positions by time,
//!   trims);
//! - [`roles`]: a node's roles over its engines: writer while it leads, follower otherwise,
//!   throughput use shared with the other nodes;
//! - [`store`]: the engine's storage seam on all of the above (`rivulet serve --cluster`);
//! - [`servers`]: a harness that runs real `nats-server` clusters on loopback for tests and
//!   benchmarks, and stops them.

pub mod api;
pub mod batch;
pub mod dense;
pub mod direct;
pub mod lease;
pub mod meta;
pub mod records;
pub mod roles;
pub mod servers;
pub mod store;

/// The client, re-exported so that users of this crate share its pinned version and features.
pub use async_nats;

pub use api::ApiError;
pub use batch::{BatchAck, BatchError, BatchMessage, publish_atomic, publish_atomic_within};
pub use direct::{DirectBatch, DirectError, DirectGet, StoredMessage, direct_get_batch};
