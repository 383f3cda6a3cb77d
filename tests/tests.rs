//! Integration tests, compiled into one binary: real servers on real sockets, real clients.

mod durability;
mod messages;
mod sdk;
mod util;
mod wire;
