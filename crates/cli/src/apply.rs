//! `rivulet apply -f streams.toml`: declarative streams, with the attribute names of
//! Terraform's `aws_kinesis_stream` (`name`, `shard_count`, `retention_period`,
//! `stream_mode_details.stream_mode`, `encryption_type`, `kms_key_id`, `shard_level_metrics`,
//! `tags`). Prints a plan — create, update (what changes), unchanged — then applies it, waiting
//! for each stream to be ACTIVE between steps. Streams not in the file are left alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{
    EncryptionType, MetricsName, ScalingType, StreamMode, StreamModeDetails, StreamStatus,
};
use serde::Deserialize;

use crate::{describe, error_code};

/// `rivulet apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// The streams file (TOML, `[[stream]]` tables)
    #[arg(short = 'f', long = "file")]
    pub file: std::path::PathBuf,
    /// Print the plan without changing anything
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connection: crate::Connection,
}

/// `stream_mode_details`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModeDetails {
    pub stream_mode: String,
}

/// One declared stream.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub name: String,
    pub shard_count: Option<i32>,
    /// Hours [default: 24].
    pub retention_period: Option<i32>,
    pub stream_mode_details: Option<ModeDetails>,
    /// `NONE` or `KMS` [default: NONE].
    pub encryption_type: Option<String>,
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub shard_level_metrics: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The streams file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StreamsFile {
    #[serde(alias = "streams")]
    pub stream: Vec<StreamSpec>,
}

impl StreamsFile {
    /// Reads and checks a streams file.
    pub fn load(path: &Path) -> anyhow::Result<StreamsFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: StreamsFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for spec in &file.stream {
            spec.check()?;
        }
        Ok(file)
    }
}

impl StreamSpec {
    fn on_demand(&self) -> bool {
        self.stream_mode_details
            .as_ref()
            .is_some_and(|m| m.stream_mode == "ON_DEMAND")
    }

    fn encrypted(&self) -> bool {
        self.encryption_type.as_deref() == Some("KMS")
    }

    fn retention(&self) -> i32 {
        self.retention_period.unwrap_or(24)
    }

    fn check(&self) -> anyhow::Result<()> {
        let name = &self.name;
        if let Some(mode) = &self.stream_mode_details
            && !matches!(mode.stream_mode.as_str(), "PROVISIONED" | "ON_DEMAND")
        {
            anyhow::bail!("{name}: stream_mode must be PROVISIONED or ON_DEMAND");
        }
        if !self.on_demand() && self.shard_count.is_none() {
            anyhow::bail!("{name}: a PROVISIONED stream needs shard_count");
        }
        if self.on_demand() && self.shard_count.is_some() {
            anyhow::bail!("{name}: an ON_DEMAND stream takes no shard_count");
        }
        match self.encryption_type.as_deref() {
            None | Some("NONE") if self.kms_key_id.is_some() => {
                anyhow::bail!("{name}: kms_key_id needs encryption_type = \"KMS\"")
            }
            None | Some("NONE") => {}
            Some("KMS") if self.kms_key_id.is_none() => {
                anyhow::bail!(
                    "{name}: encryption_type KMS needs kms_key_id (e.g. alias/aws/kinesis)"
                )
            }
            Some("KMS") => {}
            Some(other) => {
                anyhow::bail!("{name}: encryption_type must be NONE or KMS, not {other}")
            }
        }
        for metric in &self.shard_level_metrics {
            if !MetricsName::values().contains(&metric.as_str()) {
                anyhow::bail!("{name}: unknown shard-level metric {metric}");
            }
        }
        Ok(())
    }

    /// The metrics `ALL` stands for, expanded.
    fn metrics(&self) -> Vec<String> {
        const ALL: [&str; 7] = [
            "IncomingBytes",
            "IncomingRecords",
            "OutgoingBytes",
            "OutgoingRecords",
            "WriteProvisionedThroughputExceeded",
            "ReadProvisionedThroughputExceeded",
            "IteratorAgeMilliseconds",
        ];
        let all = self.shard_level_metrics.iter().any(|m| m == "ALL");
        ALL.iter()
            .filter(|m| all || self.shard_level_metrics.iter().any(|x| x == *m))
            .map(|m| m.to_string())
            .collect()
    }
}

/// A stream as it is now.
#[derive(Debug, Clone, PartialEq)]
struct Current {
    on_demand: bool,
    open_shards: i32,
    retention: i32,
    key_id: Option<String>,
    metrics: Vec<String>,
    tags: BTreeMap<String, String>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Create,
    Mode(bool),
    ShardCount(i32),
    Retention { from: i32, to: i32 },
    StartEncryption(String),
    StopEncryption(String),
    EnableMetrics(Vec<String>),
    DisableMetrics(Vec<String>),
    AddTags(BTreeMap<String, String>),
    RemoveTags(Vec<String>),
}

/// What happens to one stream.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub name: String,
    steps: Vec<Step>,
    pub changes: Vec<String>,
    pub create: bool,
}

async fn current(client: &Client, name: &str) -> anyhow::Result<Option<Current>> {
    let summary = match client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(error) => {
            if error_code(&error).0 == "ResourceNotFoundException" {
                return Ok(None);
            }
            return Err(describe(error));
        }
    };
    let s = summary
        .stream_description_summary()
        .context("DescribeStreamSummary without a summary")?;
    let tags = client
        .list_tags_for_stream()
        .stream_name(name)
        .send()
        .await
        .map_err(describe)?;
    Ok(Some(Current {
        on_demand: s
            .stream_mode_details()
            .is_some_and(|m| m.stream_mode() == &StreamMode::OnDemand),
        open_shards: s.open_shard_count(),
        retention: s.retention_period_hours(),
        key_id: (s.encryption_type() == Some(&EncryptionType::Kms))
            .then(|| s.key_id().unwrap_or_default().to_string()),
        metrics: s
            .enhanced_monitoring()
            .iter()
            .flat_map(|m| {
                m.shard_level_metrics()
                    .iter()
                    .map(|x| x.as_str().to_string())
            })
            .collect(),
        tags: tags
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    }))
}

fn plan_one(spec: &StreamSpec, now: Option<&Current>) -> StreamPlan {
    let mut steps = Vec::new();
    let mut changes = Vec::new();
    let mode_name = |on_demand: bool| {
        if on_demand {
            "ON_DEMAND"
        } else {
            "PROVISIONED"
        }
    };
    let empty = Current {
        on_demand: spec.on_demand(),
        open_shards: spec.shard_count.unwrap_or(0),
        retention: 24,
        key_id: None,
        metrics: Vec::new(),
        tags: spec.tags.clone(),
    };
    let create = now.is_none();
    let now = match now {
        Some(now) => now,
        None => {
            steps.push(Step::Create);
            &empty
        }
    };
    if create {
        let mut what = vec![mode_name(spec.on_demand()).to_string()];
        if let Some(n) = spec.shard_count {
            what.push(format!("{n} shards"));
        }
        changes.push(what.join(", "));
    }
    if !create && now.on_demand != spec.on_demand() {
        steps.push(Step::Mode(spec.on_demand()));
        changes.push(format!(
            "stream_mode {} → {}",
            mode_name(now.on_demand),
            mode_name(spec.on_demand())
        ));
    }
    if let Some(count) = spec.shard_count
        && !create
        && count != now.open_shards
    {
        steps.push(Step::ShardCount(count));
        changes.push(format!("shard_count {} → {count}", now.open_shards));
    }
    if spec.retention() != now.retention {
        steps.push(Step::Retention {
            from: now.retention,
            to: spec.retention(),
        });
        changes.push(format!(
            "retention_period {} → {}",
            now.retention,
            spec.retention()
        ));
    }
    let wanted_key = spec
        .encrypted()
        .then(|| spec.kms_key_id.clone().unwrap_or_default());
    if wanted_key != now.key_id {
        match (&now.key_id, &wanted_key) {
            (Some(old), None) => {
                steps.push(Step::StopEncryption(old.clone()));
                changes.push(format!("encryption KMS ({old}) → NONE"));
            }
            (old, Some(key)) => {
                steps.push(Step::StartEncryption(key.clone()));
                changes.push(match old {
                    Some(old) => format!("kms_key_id {old} → {key}"),
                    None => format!("encryption NONE → KMS ({key})"),
                });
            }
            (None, None) => {}
        }
    }
    let wanted_metrics = spec.metrics();
    let enable: Vec<String> = wanted_metrics
        .iter()
        .filter(|m| !now.metrics.contains(m))
        .cloned()
        .collect();
    let disable: Vec<String> = now
        .metrics
        .iter()
        .filter(|m| !wanted_metrics.contains(m))
        .cloned()
        .collect();
    if !enable.is_empty() {
        changes.push(format!("shard_level_metrics + {}", enable.join(", ")));
        steps.push(Step::EnableMetrics(enable));
    }
    if !disable.is_empty() {
        changes.push(format!("shard_level_metrics − {}", disable.join(", ")));
        steps.push(Step::DisableMetrics(disable));
    }
    if !create {
        let add: BTreeMap<String, String> = spec
            .tags
            .iter()
            .filter(|(k, v)| now.tags.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let remove: Vec<String> = now
            .tags
            .keys()
            .filter(|k| !spec.tags.contains_key(*k))
            .cloned()
            .collect();
        if !add.is_empty() {
            changes.push(format!(
                "tags + {}",
                add.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            steps.push(Step::AddTags(add));
        }
        if !remove.is_empty() {
            changes.push(format!("tags − {}", remove.join(", ")));
            steps.push(Step::RemoveTags(remove));
        }
    } else if !spec.tags.is_empty() {
        changes.push(format!("{} tag(s)", spec.tags.len()));
    }
    StreamPlan {
        name: spec.name.clone(),
        steps,
        changes,
        create,
    }
}

/// The plan for every stream of the file, against the endpoint's current state.
pub async fn plan(client: &Client, file: &StreamsFile) -> anyhow::Result<Vec<StreamPlan>> {
    let mut plans = Vec::new();
    for spec in &file.stream {
        let now = current(client, &spec.name).await?;
        plans.push(plan_one(spec, now.as_ref()));
    }
    Ok(plans)
}

/// The plan as printed.
pub fn render(plans: &[StreamPlan]) -> String {
    let mut out = String::new();
    let (mut create, mut update, mut same) = (0, 0, 0);
    for p in plans {
        if p.create {
            create += 1;
            let _ = writeln!(out, "+ {}: create ({})", p.name, p.changes.join("; "));
        } else if p.steps.is_empty() {
            same += 1;
            let _ = writeln!(out, "= {}: unchanged", p.name);
        } else {
            update += 1;
            let _ = writeln!(out, "~ {}: {}", p.name, p.changes.join("; "));
        }
    }
    let _ = writeln!(
        out,
        "Plan: {create} to create, {update} to update, {same} unchanged."
    );
    out
}

fn metric_names(metrics: &[String]) -> Vec<MetricsName> {
    metrics
        .iter()
        .map(|m| MetricsName::from(m.as_str()))
        .collect()
}

async fn wait_active(client: &Client, name: &str) -> anyhow::Result<()> {
    for _ in 0..1200 {
        let out = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(describe)?;
        if out
            .stream_description_summary()
            .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{name} did not become ACTIVE within 2 minutes")
}

async fn apply_one(client: &Client, spec: &StreamSpec, plan: &StreamPlan) -> anyhow::Result<()> {
    let name = spec.name.as_str();
    for step in &plan.steps {
        match step {
            Step::Create => {
                let mut request = client.create_stream().stream_name(name);
                if spec.on_demand() {
                    request = request.stream_mode_details(
                        StreamModeDetails::builder()
                            .stream_mode(StreamMode::OnDemand)
                            .build()?,
                    );
                } else {
                    request = request.set_shard_count(spec.shard_count);
                }
                for (k, v) in &spec.tags {
                    request = request.tags(k, v);
                }
                request.send().await.map_err(describe)?;
            }
            Step::Mode(on_demand) => {
                let arn = client
                    .describe_stream_summary()
                    .stream_name(name)
                    .send()
                    .await
                    .map_err(describe)?
                    .stream_description_summary()
                    .map(|s| s.stream_arn().to_string())
                    .unwrap_or_default();
                let mode = if *on_demand {
                    StreamMode::OnDemand
                } else {
                    StreamMode::Provisioned
                };
                client
                    .update_stream_mode()
                    .stream_arn(arn)
                    .stream_mode_details(StreamModeDetails::builder().stream_mode(mode).build()?)
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Step::ShardCount(count) => {
                client
                    .update_shard_count()
                    .stream_name(name)
                    .target_shard_count(*count)
                    .scaling_type(ScalingType::UniformScaling)
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Step::Retention { from, to } if to > from => {
                client
                    .increase_stream_retention_period()
                    .stream_name(name)
                    .retention_period_hours(*to)
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Step::Retention { to, .. } => {
                client
                    .decrease_stream_retention_period()
                    .stream_name(name)
                    .retention_period_hours(*to)
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Step::StartEncryption(key) => {
                client
                    .start_stream_encryption()
                    .stream_name(name)
                    .encryption_type(EncryptionType::Kms)
                    .key_id(key)
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Step::StopEncryption(key) => {
                client
                    .stop_stream_encryption()
                    .stream_name(name)
                    .encryption_type(EncryptionType::Kms)
                    .key_id(key)
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Step::EnableMetrics(metrics) => {
                client
                    .enable_enhanced_monitoring()
                    .stream_name(name)
                    .set_shard_level_metrics(Some(metric_names(metrics)))
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Step::DisableMetrics(metrics) => {
                client
                    .disable_enhanced_monitoring()
                    .stream_name(name)
                    .set_shard_level_metrics(Some(metric_names(metrics)))
                    .send()
                    .await
                    .map_err(describe)?;
            }
            Step::AddTags(tags) => {
                // AddTagsToStream takes ten tags per call.
                let pairs: Vec<_> = tags.iter().collect();
                for chunk in pairs.chunks(10) {
                    let mut request = client.add_tags_to_stream().stream_name(name);
                    for (k, v) in chunk {
                        request = request.tags(*k, *v);
                    }
                    request.send().await.map_err(describe)?;
                }
            }
            Step::RemoveTags(keys) => {
                for chunk in keys.chunks(10) {
                    client
                        .remove_tags_from_stream()
                        .stream_name(name)
                        .set_tag_keys(Some(chunk.to_vec()))
                        .send()
                        .await
                        .map_err(describe)?;
                }
            }
        }
        wait_active(client, name).await?;
    }
    Ok(())
}

/// Plans, prints, and (unless `dry_run`) applies a streams file; returns the printed text.
pub async fn apply(client: &Client, file: &StreamsFile, dry_run: bool) -> anyhow::Result<String> {
    let plans = plan(client, file).await?;
    let mut out = render(&plans);
    if dry_run {
        out.push_str("Dry run: nothing changed.\n");
        return Ok(out);
    }
    for (spec, plan) in file.stream.iter().zip(&plans) {
        if plan.steps.is_empty() {
            continue;
        }
        apply_one(client, spec, plan)
            .await
            .with_context(|| format!("applying {}", spec.name))?;
        let _ = writeln!(out, "{}: done", spec.name);
    }
    Ok(out)
}

/// `rivulet apply`, boxed ([`crate::Task`]).
pub fn run_task(args: ApplyArgs) -> crate::Task<()> {
    Box::pin(run(args))
}

/// Applies `file` to the endpoint of `connection`, signing with `credentials` when given:
/// the report, boxed ([`crate::Task`]).
pub fn apply_file_task(
    connection: crate::Connection,
    credentials: Option<crate::Credentials>,
    file: StreamsFile,
) -> crate::Task<String> {
    Box::pin(async move {
        let client = connection.client_with(credentials).await;
        apply(&client, &file, false).await
    })
}

/// `rivulet apply`.
pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let file = StreamsFile::load(&args.file)?;
    let client = args.connection.client().await;
    print!("{}", apply(&client, &file, args.dry_run).await?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> StreamSpec {
        let file: StreamsFile = toml::from_str(text).unwrap();
        file.stream[0].check().unwrap();
        file.stream[0].clone()
    }

    #[test]
    fn plans_name_each_change() {
        let s = spec(
            r#"
[[stream]]
name = "orders"
shard_count = 4
retention_period = 48
encryption_type = "KMS"
kms_key_id = "alias/aws/kinesis"
shard_level_metrics = ["IncomingBytes"]
tags = { team = "data" }
"#,
        );
        let created = plan_one(&s, None);
        assert!(created.create);
        assert_eq!(created.steps[0], Step::Create);
        let now = Current {
            on_demand: false,
            open_shards: 2,
            retention: 24,
            key_id: None,
            metrics: vec!["OutgoingBytes".into()],
            tags: [
                ("team".to_string(), "web".to_string()),
                ("old".to_string(), "x".to_string()),
            ]
            .into(),
        };
        let updated = plan_one(&s, Some(&now));
        assert_eq!(
            updated.changes,
            [
                "shard_count 2 → 4",
                "retention_period 24 → 48",
                "encryption NONE → KMS (alias/aws/kinesis)",
                "shard_level_metrics + IncomingBytes",
                "shard_level_metrics − OutgoingBytes",
                "tags + team=data",
                "tags − old",
            ]
        );
        let same = Current {
            on_demand: false,
            open_shards: 4,
            retention: 48,
            key_id: Some("alias/aws/kinesis".into()),
            metrics: vec!["IncomingBytes".into()],
            tags: [("team".to_string(), "data".to_string())].into(),
        };
        assert!(plan_one(&s, Some(&same)).steps.is_empty());
        assert!(render(&[plan_one(&s, Some(&same))]).contains("= orders: unchanged"));
    }

    #[test]
    fn bad_specs_are_refused() {
        for text in [
            "[[stream]]\nname = \"a\"\n",
            "[[stream]]\nname = \"a\"\nshard_count = 1\nencryption_type = \"KMS\"\n",
            "[[stream]]\nname = \"a\"\nstream_mode_details = { stream_mode = \"ON_DEMAND\" }\nshard_count = 2\n",
            "[[stream]]\nname = \"a\"\nshard_count = 1\nshard_level_metrics = [\"Bogus\"]\n",
        ] {
            let file: StreamsFile = toml::from_str(text).unwrap();
            assert!(file.stream[0].check().is_err(), "{text}");
        }
        assert!(toml::from_str::<StreamsFile>("[[stream]]\nname = \"a\"\nshards = 1\n").is_err());
    }
}
