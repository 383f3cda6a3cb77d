//! Integration tests of `rivulet-log`, compiled into one binary.

mod basic;
mod corruption;
mod crash;
mod encrypted;
mod group_commit;
mod journal;
mod model;
mod prefix;
mod upgrade;
mod util;
