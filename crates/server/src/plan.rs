//! `rivulet plan`: how many shards a workload needs, worked out the way AWS's documentation
//! does it — shards for write throughput (1 MiB/s each), shards for write record rate (1,000
//! records/s each), shards for read throughput (2 MiB/s each, per shared-throughput consumer);
//! the largest wins — and what an on-demand stream does with the same load.

use std::fmt::Write as _;

/// `rivulet plan` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Average records per second written
    #[arg(long)]
    pub records_per_second: f64,
    /// Average record size in KB (KiB, partition key included)
    #[arg(long)]
    pub average_record_kb: f64,
    /// Peak load over the average
    #[arg(long, default_value_t = 1.0)]
    pub peak_multiplier: f64,
    /// Consumers reading every record with GetRecords (shared throughput); enhanced fan-out
    /// consumers have their own 2 MiB/s per shard and do not count here
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
}

/// The outcome for a provisioned stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub peak_records_per_second: f64,
    pub peak_write_mib_per_second: f64,
    pub shards_for_write_throughput: u64,
    pub shards_for_record_rate: u64,
    pub shards_for_read_throughput: u64,
    pub shards: u64,
}

fn shards_for(load: f64, per_shard: f64) -> u64 {
    // A whisker of tolerance so 2.0000000001 shards of float noise is still 2.
    ((load / per_shard) - 1e-9).ceil().max(1.0) as u64
}

/// The provisioned-mode calculation.
pub fn calculate(args: &PlanArgs) -> anyhow::Result<Plan> {
    for (name, value) in [
        ("--records-per-second", args.records_per_second),
        ("--average-record-kb", args.average_record_kb),
        ("--peak-multiplier", args.peak_multiplier),
    ] {
        if !(value.is_finite() && value > 0.0) {
            anyhow::bail!("{name} must be a positive number, got {value}");
        }
    }
    if args.peak_multiplier < 1.0 {
        anyhow::bail!("--peak-multiplier is the peak over the average: at least 1");
    }
    if args.average_record_kb > 10_240.0 {
        anyhow::bail!("a record is at most 10,240 KiB (10 MiB)");
    }
    let peak_records = args.records_per_second * args.peak_multiplier;
    let peak_mib = peak_records * args.average_record_kb / 1024.0;
    let write = shards_for(peak_mib, 1.0);
    let records = shards_for(peak_records, 1000.0);
    let read = shards_for(peak_mib * f64::from(args.consumers.max(1)), 2.0);
    Ok(Plan {
        peak_records_per_second: peak_records,
        peak_write_mib_per_second: peak_mib,
        shards_for_write_throughput: write,
        shards_for_record_rate: records,
        shards_for_read_throughput: read,
        shards: write.max(records).max(read),
    })
}

fn number(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{}", value.round() as i64)
    } else {
        format!("{value:.2}")
    }
}

/// The plan as printed, with its reasoning.
pub fn render(args: &PlanArgs) -> anyhow::Result<String> {
    let plan = calculate(args)?;
    let mut out = String::new();
    let peak = plan.peak_records_per_second;
    let mib = plan.peak_write_mib_per_second;
    let _ = writeln!(
        out,
        "Workload: {} records/s × {} KiB, peak × {} → {} records/s and {} MiB/s at peak.",
        number(args.records_per_second),
        number(args.average_record_kb),
        number(args.peak_multiplier),
        number(peak),
        number(mib)
    );
    let _ = writeln!(out, "\nPROVISIONED");
    let _ = writeln!(
        out,
        "  write throughput: {} MiB/s ÷ 1 MiB/s per shard      = {} shards",
        number(mib),
        plan.shards_for_write_throughput
    );
    let _ = writeln!(
        out,
        "  write records:    {} records/s ÷ 1,000 per shard    = {} shards",
        number(peak),
        plan.shards_for_record_rate
    );
    let _ = writeln!(
        out,
        "  read throughput:  {} consumer(s) × {} MiB/s ÷ 2 MiB/s per shard = {} shards",
        args.consumers.max(1),
        number(mib),
        plan.shards_for_read_throughput
    );
    let binding = if plan.shards == plan.shards_for_write_throughput {
        "write throughput"
    } else if plan.shards == plan.shards_for_record_rate {
        "the record rate"
    } else {
        "read throughput"
    };
    let _ = writeln!(
        out,
        "  → {} shards (the largest wins; here {binding} decides).",
        plan.shards
    );
    let _ = writeln!(
        out,
        "    aws kinesis create-stream --stream-name NAME --shard-count {}",
        plan.shards
    );
    let _ = writeln!(out, "\nON_DEMAND");
    let _ = writeln!(
        out,
        "  starts with 4 MiB/s and 4,000 records/s of write capacity (4 shards) and scales to \
         twice the peak of the last 30 days."
    );
    let capacity_shards = 4u64;
    if plan
        .shards_for_write_throughput
        .max(plan.shards_for_record_rate)
        <= capacity_shards
    {
        let _ = writeln!(
            out,
            "  → the peak fits the initial capacity: no throttling expected."
        );
    } else {
        let needed = plan
            .shards_for_write_throughput
            .max(plan.shards_for_record_rate) as f64;
        let doublings = (needed / capacity_shards as f64).log2().ceil() as u32;
        let _ = writeln!(
            out,
            "  → the peak needs about {} shards of write capacity: {} doubling(s) from the \
             initial 4. Expect throttling while it scales (each step follows sustained load), \
             or set warm throughput to {} MiB/s (UpdateStreamWarmThroughput) to start there.",
            needed as u64,
            doublings,
            number(mib.ceil())
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(records: f64, kb: f64, peak: f64, consumers: u32) -> PlanArgs {
        PlanArgs {
            records_per_second: records,
            average_record_kb: kb,
            peak_multiplier: peak,
            consumers,
        }
    }

    #[test]
    fn the_larger_requirement_wins() {
        // 5,000 × 3 = 15,000 records/s of 2 KiB = 29.3 MiB/s: 30 shards for bytes, 15 for
        // records.
        let plan = calculate(&args(5000.0, 2.0, 3.0, 1)).unwrap();
        assert_eq!(plan.shards_for_write_throughput, 30);
        assert_eq!(plan.shards_for_record_rate, 15);
        assert_eq!(plan.shards_for_read_throughput, 15);
        assert_eq!(plan.shards, 30);
        // Small records: the record rate decides.
        let plan = calculate(&args(10_000.0, 0.1, 1.0, 1)).unwrap();
        assert_eq!((plan.shards_for_record_rate, plan.shards), (10, 10));
        // Many shared-throughput consumers: reading decides.
        let plan = calculate(&args(1000.0, 1.0, 1.0, 5)).unwrap();
        assert_eq!((plan.shards_for_read_throughput, plan.shards), (3, 3));
        // Exactly at a shard's capacity: one shard, not two.
        assert_eq!(calculate(&args(1000.0, 1.024, 1.0, 1)).unwrap().shards, 1);
        let text = render(&args(5000.0, 2.0, 3.0, 1)).unwrap();
        assert!(text.contains("→ 30 shards (the largest wins; here write throughput decides)"));
        assert!(text.contains("--shard-count 30"));
        assert!(text.contains("3 doubling(s)"), "{text}");
        assert!(calculate(&args(0.0, 1.0, 1.0, 1)).is_err());
        assert!(calculate(&args(1.0, 1.0, 0.5, 1)).is_err());
    }
}
