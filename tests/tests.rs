//! Integration tests, compiled into one binary: real servers on real sockets, real clients.

mod auth;
mod authz;
mod channels;
mod cli;
mod cluster;
mod consumers;
mod durability;
mod encryption;
mod kcl;
mod limits;
mod messages;
mod observe;
mod queues;
mod sdk;
mod sequence;
mod subscribe;
mod tls;
mod transport;
mod upgrade;
mod util;
mod wire;
