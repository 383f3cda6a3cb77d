//! `rivulet-bench`: the load generator as its own binary (`scripts/bench.sh` runs it; the same
//! code is `rivulet bench`).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "rivulet-bench",
    about = "Load generator for Kinesis-compatible endpoints"
)]
struct Cli {
    #[command(flatten)]
    args: rivulet_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rivulet_bench::run(Cli::parse().args).await
}
