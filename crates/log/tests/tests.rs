//! Integration tests of `rivulet-log`, compiled into one binary.

mod basic;
mod corruption;
mod crash;
mod group_commit;
mod model;
mod util;
