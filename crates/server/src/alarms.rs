//! CloudWatch-style metric alarms, declared in the config file with the attribute names of
//! Terraform's `aws_cloudwatch_metric_alarm` and evaluated by the server once a second over the
//! engine's metric buckets: OK / ALARM / INSUFFICIENT_DATA, shown at `GET /_rivulet/alarms`;
//! each change is logged and, with a webhook, POSTed as JSON (the shape of CloudWatch's SNS
//! alarm notification).
//!
//! Evaluation follows CloudWatch: the last `evaluation_periods` complete periods (aligned to
//! multiples of `period`), the alarm fires when `datapoints_to_alarm` of them breach; periods
//! without data points count as `treat_missing_data` says (default `missing`: ignored, and no
//! data at all is INSUFFICIENT_DATA).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context;
use parking_lot::Mutex;
use rivulet_engine::Engine;
use rivulet_engine::metrics::{BUCKET_S, BUCKETS, Metric, SHARD_BUCKETS, Statistic};
use serde::{Deserialize, Serialize};

/// One `[[alarms]]` table of the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlarmRule {
    pub alarm_name: String,
    pub metric_name: String,
    #[serde(default = "kinesis_namespace")]
    pub namespace: String,
    pub statistic: String,
    /// Seconds; a multiple of 10.
    pub period: u32,
    pub evaluation_periods: u32,
    pub comparison_operator: String,
    pub threshold: f64,
    /// `StreamName` (required) and `ShardId` (shard-level metrics).
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    pub datapoints_to_alarm: Option<u32>,
    /// `missing` (default), `notBreaching`, `breaching` or `ignore`.
    pub treat_missing_data: Option<String>,
    #[serde(default)]
    pub alarm_description: String,
    /// The account whose stream is watched [default: the server's].
    pub account_id: Option<String>,
}

fn kinesis_namespace() -> String {
    "AWS/Kinesis".into()
}

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

/// `treat_missing_data`: `missing` (periods without data are left out), `notBreaching`,
/// `breaching`, `ignore` (no data keeps the state).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Missing {
    LeftOut,
    NotBreaching,
    Breaching,
    Ignore,
}

/// A rule checked and ready to evaluate.
#[derive(Debug, Clone)]
struct Compiled {
    rule: AlarmRule,
    metric: Metric,
    statistic: Statistic,
    comparison: Comparison,
    missing: Missing,
    to_alarm: u32,
}

impl AlarmRule {
    fn compile(&self) -> anyhow::Result<Compiled> {
        let name = &self.alarm_name;
        if self.namespace != "AWS/Kinesis" {
            anyhow::bail!("alarm {name}: only the AWS/Kinesis namespace is served");
        }
        let metric = Metric::from_name(&self.metric_name)
            .with_context(|| format!("alarm {name}: unknown metric {}", self.metric_name))?;
        let statistic = Statistic::parse(&self.statistic).with_context(|| {
            format!("alarm {name}: statistic must be Sum, Average, Maximum, Minimum or SampleCount")
        })?;
        let comparison = match self.comparison_operator.as_str() {
            "GreaterThanThreshold" => Comparison::Greater,
            "GreaterThanOrEqualToThreshold" => Comparison::GreaterOrEqual,
            "LessThanThreshold" => Comparison::Less,
            "LessThanOrEqualToThreshold" => Comparison::LessOrEqual,
            other => anyhow::bail!("alarm {name}: unknown comparison_operator {other}"),
        };
        let missing = match self.treat_missing_data.as_deref().unwrap_or("missing") {
            "missing" => Missing::LeftOut,
            "notBreaching" => Missing::NotBreaching,
            "breaching" => Missing::Breaching,
            "ignore" => Missing::Ignore,
            other => anyhow::bail!("alarm {name}: unknown treat_missing_data {other}"),
        };
        if self.period == 0 || i64::from(self.period) % BUCKET_S != 0 {
            anyhow::bail!("alarm {name}: period must be a positive multiple of {BUCKET_S} s");
        }
        let window = i64::from(self.period) * i64::from(self.evaluation_periods);
        // Streams keep an hour of buckets, shards a quarter of one.
        let buckets = if self.dimensions.contains_key("ShardId") {
            SHARD_BUCKETS
        } else {
            BUCKETS
        };
        let longest = BUCKET_S * buckets as i64 - BUCKET_S;
        if self.evaluation_periods == 0 || window > longest {
            anyhow::bail!(
                "alarm {name}: period × evaluation_periods must be between {BUCKET_S} s and \
                 {longest} s"
            );
        }
        let to_alarm = self.datapoints_to_alarm.unwrap_or(self.evaluation_periods);
        if to_alarm == 0 || to_alarm > self.evaluation_periods {
            anyhow::bail!("alarm {name}: datapoints_to_alarm must be 1..=evaluation_periods");
        }
        if !self.dimensions.contains_key("StreamName") {
            anyhow::bail!("alarm {name}: dimensions need StreamName");
        }
        if let Some(other) = self
            .dimensions
            .keys()
            .find(|k| *k != "StreamName" && *k != "ShardId")
        {
            anyhow::bail!("alarm {name}: unknown dimension {other}");
        }
        Ok(Compiled {
            rule: self.clone(),
            metric,
            statistic,
            comparison,
            missing,
            to_alarm,
        })
    }
}

/// What `GET /_rivulet/alarms` shows of one alarm.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmView {
    pub alarm_name: String,
    pub state: AlarmState,
    pub reason: String,
    /// Epoch milliseconds of the last state change.
    pub state_updated_ms: i64,
    pub metric_name: String,
    pub namespace: String,
    pub statistic: String,
    pub period: u32,
    pub evaluation_periods: u32,
    pub comparison_operator: String,
    pub threshold: f64,
    pub dimensions: BTreeMap<String, String>,
    /// The evaluated periods' values, oldest first (`null`: no data points).
    pub datapoints: Vec<Option<f64>>,
}

/// A state change, for the log and the webhook.
#[derive(Debug, Clone)]
pub struct Change {
    pub view: AlarmView,
    pub old: AlarmState,
}

/// Every alarm of the server.
pub struct Alarms {
    compiled: Vec<Compiled>,
    states: Mutex<Vec<AlarmView>>,
    webhook: Option<String>,
    evaluated_s: Mutex<i64>,
}

impl Alarms {
    /// Checks the rules; an invalid rule stops the server from starting, with the reason.
    pub fn new(
        rules: &[AlarmRule],
        webhook: Option<String>,
        now_ms: i64,
    ) -> anyhow::Result<Alarms> {
        let compiled = rules
            .iter()
            .map(AlarmRule::compile)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut names = std::collections::HashSet::new();
        for c in &compiled {
            if !names.insert(c.rule.alarm_name.clone()) {
                anyhow::bail!("alarm {} is declared twice", c.rule.alarm_name);
            }
        }
        if let Some(url) = &webhook {
            parse_http_url(url).with_context(|| format!("alarm webhook {url}"))?;
        }
        let states = compiled
            .iter()
            .map(|c| AlarmView {
                alarm_name: c.rule.alarm_name.clone(),
                state: AlarmState::InsufficientData,
                reason: "Unchecked: Initial alarm creation".into(),
                state_updated_ms: now_ms,
                metric_name: c.rule.metric_name.clone(),
                namespace: c.rule.namespace.clone(),
                statistic: c.rule.statistic.clone(),
                period: c.rule.period,
                evaluation_periods: c.rule.evaluation_periods,
                comparison_operator: c.rule.comparison_operator.clone(),
                threshold: c.rule.threshold,
                dimensions: c.rule.dimensions.clone(),
                datapoints: Vec::new(),
            })
            .collect();
        Ok(Alarms {
            compiled,
            states: Mutex::new(states),
            webhook,
            evaluated_s: Mutex::new(i64::MIN),
        })
    }

    /// Every alarm, as declared.
    pub fn views(&self) -> Vec<AlarmView> {
        self.states.lock().clone()
    }

    /// The alarms on `account`'s streams (the account a rule names, or the server's own), or
    /// every alarm for `None`.
    pub fn views_for(&self, account: Option<&str>, own_account: &str) -> Vec<AlarmView> {
        let states = self.states.lock();
        self.compiled
            .iter()
            .zip(states.iter())
            .filter(|(compiled, _)| {
                account.is_none_or(|account| {
                    compiled.rule.account_id.as_deref().unwrap_or(own_account) == account
                })
            })
            .map(|(_, view)| view.clone())
            .collect()
    }

    /// Evaluates every alarm once a second; returns the state changes.
    pub fn evaluate(
        &self,
        accounts: &HashMap<String, Arc<Engine>>,
        own_account: &str,
        now_ms: i64,
    ) -> Vec<Change> {
        let now_s = now_ms.div_euclid(1000);
        {
            let mut evaluated = self.evaluated_s.lock();
            if *evaluated == now_s {
                return Vec::new();
            }
            *evaluated = now_s;
        }
        let mut changes = Vec::new();
        let mut states = self.states.lock();
        for (compiled, view) in self.compiled.iter().zip(states.iter_mut()) {
            let account = compiled.rule.account_id.as_deref().unwrap_or(own_account);
            let (state, reason, datapoints) = match accounts.get(account) {
                Some(engine) => evaluate_one(compiled, engine, now_s),
                None => (
                    Some(AlarmState::InsufficientData),
                    format!("Account {account} is not served here"),
                    Vec::new(),
                ),
            };
            view.datapoints = datapoints;
            // `None`: treat_missing_data = ignore and no data: the state stays.
            let Some(state) = state else { continue };
            if state != view.state {
                let old = view.state;
                view.state = state;
                view.reason = reason;
                view.state_updated_ms = now_ms;
                changes.push(Change {
                    view: view.clone(),
                    old,
                });
            }
        }
        changes
    }

    /// Logs each change and POSTs it to the webhook (in the background).
    pub fn announce(&self, changes: Vec<Change>) {
        for change in changes {
            let view = &change.view;
            tracing::warn!(
                alarm = %view.alarm_name,
                old = ?change.old,
                new = ?view.state,
                reason = %view.reason,
                "alarm state changed"
            );
            if let Some(url) = self.webhook.clone() {
                let body = notification(&change);
                tokio::spawn(async move {
                    if let Err(error) = post_json(&url, body).await {
                        tracing::error!(%error, %url, "alarm webhook failed");
                    }
                });
            }
        }
    }
}

fn breaches(comparison: Comparison, value: f64, threshold: f64) -> bool {
    match comparison {
        Comparison::Greater => value > threshold,
        Comparison::GreaterOrEqual => value >= threshold,
        Comparison::Less => value < threshold,
        Comparison::LessOrEqual => value <= threshold,
    }
}

fn operator_text(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::Greater => "greater than",
        Comparison::GreaterOrEqual => "greater than or equal to",
        Comparison::Less => "less than",
        Comparison::LessOrEqual => "less than or equal to",
    }
}

fn evaluate_one(
    compiled: &Compiled,
    engine: &Engine,
    now_s: i64,
) -> (Option<AlarmState>, String, Vec<Option<f64>>) {
    let rule = &compiled.rule;
    let period = i64::from(rule.period);
    let last_end = now_s.div_euclid(period) * period;
    let stream = rule
        .dimensions
        .get("StreamName")
        .map(String::as_str)
        .unwrap_or("");
    let shard = rule.dimensions.get("ShardId").map(String::as_str);
    let mut datapoints = Vec::new();
    for i in (0..i64::from(rule.evaluation_periods)).rev() {
        let end = last_end - i * period;
        let stat = engine.metric_window(stream, shard, compiled.metric, end - period, end);
        datapoints.push(stat.and_then(|s| s.statistic(compiled.statistic)));
    }
    let present: Vec<f64> = datapoints.iter().flatten().copied().collect();
    let mut breaching = present
        .iter()
        .filter(|v| breaches(compiled.comparison, **v, rule.threshold))
        .count() as u32;
    let missing = datapoints.len() as u32 - present.len() as u32;
    if compiled.missing == Missing::Breaching {
        breaching += missing;
    }
    let considered = match compiled.missing {
        Missing::Breaching | Missing::NotBreaching => datapoints.len(),
        Missing::LeftOut | Missing::Ignore => present.len(),
    } as u32;
    let shown: Vec<String> = present.iter().map(|v| format!("{v}")).collect();
    let what = format!(
        "[{}] {} the threshold ({})",
        shown.join(", "),
        operator_text(compiled.comparison),
        rule.threshold
    );
    if breaching >= compiled.to_alarm {
        let reason = format!(
            "Threshold Crossed: {breaching} out of the last {} datapoints {what}.",
            rule.evaluation_periods
        );
        return (Some(AlarmState::Alarm), reason, datapoints);
    }
    if considered == 0 {
        // `ignore` keeps the current state; `missing` knows nothing.
        let state = (compiled.missing != Missing::Ignore).then_some(AlarmState::InsufficientData);
        return (
            state,
            format!(
                "Insufficient Data: {} datapoints were unknown.",
                rule.evaluation_periods
            ),
            datapoints,
        );
    }
    (
        Some(AlarmState::Ok),
        format!(
            "Threshold Crossed: {breaching} out of the last {} datapoints {what} — not enough \
             to alarm ({} needed).",
            rule.evaluation_periods, compiled.to_alarm
        ),
        datapoints,
    )
}

/// The webhook's JSON, shaped like CloudWatch's SNS alarm notification.
fn notification(change: &Change) -> serde_json::Value {
    let view = &change.view;
    let dimensions: Vec<serde_json::Value> = view
        .dimensions
        .iter()
        .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
        .collect();
    serde_json::json!({
        "AlarmName": view.alarm_name,
        "NewStateValue": view.state,
        "OldStateValue": change.old,
        "NewStateReason": view.reason,
        "StateChangeTime": rivulet_engine::time::java_date(view.state_updated_ms),
        "StateChangeTimeMs": view.state_updated_ms,
        "Trigger": {
            "MetricName": view.metric_name,
            "Namespace": view.namespace,
            "Statistic": view.statistic.to_uppercase(),
            "Period": view.period,
            "EvaluationPeriods": view.evaluation_periods,
            "ComparisonOperator": view.comparison_operator,
            "Threshold": view.threshold,
            "Dimensions": dimensions,
        },
    })
}

/// `http://host:port/path` → (authority, path).
fn parse_http_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("the webhook must be an http:// URL")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        anyhow::bail!("the webhook URL has no host");
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

async fn post_json(url: &str, body: serde_json::Value) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Full};
    let (authority, path) = parse_http_url(url)?;
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    .context("connect timed out")??;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))?;
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sender.send_request(request),
    )
    .await
    .context("the webhook did not answer in time")??;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if !status.is_success() {
        anyhow::bail!("the webhook answered {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_engine::{CreateStream, EngineConfig, PutEntry, StreamTarget};
    use rivulet_log::{MemBackend, Store, StoreConfig};

    const T0: i64 = 1_000_000_000; // ms, on a 10 s boundary

    fn rule(missing: Option<&str>) -> AlarmRule {
        AlarmRule {
            alarm_name: "busy".into(),
            metric_name: "IncomingRecords".into(),
            namespace: "AWS/Kinesis".into(),
            statistic: "Sum".into(),
            period: 10,
            evaluation_periods: 1,
            comparison_operator: "GreaterThanThreshold".into(),
            threshold: 5.0,
            dimensions: [("StreamName".to_string(), "s".to_string())].into(),
            datapoints_to_alarm: None,
            treat_missing_data: missing.map(str::to_string),
            alarm_description: String::new(),
            account_id: None,
        }
    }

    fn engine() -> Arc<Engine> {
        let store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
        let config = EngineConfig {
            create_stream_ms: 0,
            ..EngineConfig::default()
        };
        let engine = Engine::open(store, config).unwrap();
        engine
            .create_stream(
                CreateStream {
                    name: "s".into(),
                    shard_count: Some(1),
                    ..CreateStream::default()
                },
                T0,
            )
            .unwrap();
        Arc::new(engine)
    }

    fn put(engine: &Engine, n: usize, at_ms: i64) {
        let entries: Vec<PutEntry<'_>> = (0..n)
            .map(|_| PutEntry {
                partition_key: Some("k"),
                explicit_hash_key: None,
                data: b"x",
            })
            .collect();
        let outcome = engine
            .put_records(&StreamTarget::name("s"), &entries, None, true, at_ms)
            .unwrap();
        let results = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(outcome.finish())
            .unwrap();
        assert!(results.iter().all(|r| r.is_ok()));
    }

    #[test]
    fn states_follow_complete_periods() {
        let engine = engine();
        let accounts: HashMap<String, Arc<Engine>> =
            [("000000000000".to_string(), engine.clone())].into();
        let alarms = Alarms::new(
            &[
                rule(Some("notBreaching")),
                AlarmRule {
                    alarm_name: "strict".into(),
                    ..rule(None)
                },
            ],
            None,
            T0,
        )
        .unwrap();
        let states = |alarms: &Alarms| -> Vec<AlarmState> {
            alarms.views().iter().map(|v| v.state).collect()
        };
        assert_eq!(
            states(&alarms),
            [AlarmState::InsufficientData, AlarmState::InsufficientData]
        );
        put(&engine, 20, T0 + 1_000);
        // The period holding the puts is not complete yet: no data in the last one.
        let changes = alarms.evaluate(&accounts, "000000000000", T0 + 5_000);
        assert_eq!(
            changes.len(),
            1,
            "notBreaching turns OK, missing stays unknown"
        );
        assert_eq!(
            states(&alarms),
            [AlarmState::Ok, AlarmState::InsufficientData]
        );
        let changes = alarms.evaluate(&accounts, "000000000000", T0 + 10_000);
        assert_eq!(changes.len(), 2);
        assert_eq!(states(&alarms), [AlarmState::Alarm, AlarmState::Alarm]);
        assert_eq!(
            alarms.views()[0].reason,
            "Threshold Crossed: 1 out of the last 1 datapoints [20] greater than the threshold \
             (5)."
        );
        assert_eq!(alarms.views()[0].datapoints, [Some(20.0)]);
        // The same second is evaluated once.
        assert!(
            alarms
                .evaluate(&accounts, "000000000000", T0 + 10_500)
                .is_empty()
        );
        alarms.evaluate(&accounts, "000000000000", T0 + 20_000);
        assert_eq!(
            states(&alarms),
            [AlarmState::Ok, AlarmState::InsufficientData]
        );
        let body = notification(&Change {
            view: alarms.views()[0].clone(),
            old: AlarmState::Alarm,
        });
        assert_eq!(body["NewStateValue"], "OK");
        assert_eq!(body["OldStateValue"], "ALARM");
        assert_eq!(body["Trigger"]["Dimensions"][0]["value"], "s");
    }

    #[test]
    fn invalid_rules_are_refused() {
        let bad = [
            AlarmRule {
                metric_name: "Nope".into(),
                ..rule(None)
            },
            AlarmRule {
                period: 15,
                ..rule(None)
            },
            AlarmRule {
                evaluation_periods: 1000,
                ..rule(None)
            },
            AlarmRule {
                comparison_operator: "Bigger".into(),
                ..rule(None)
            },
            AlarmRule {
                statistic: "p99".into(),
                ..rule(None)
            },
            AlarmRule {
                dimensions: BTreeMap::new(),
                ..rule(None)
            },
            AlarmRule {
                namespace: "AWS/EC2".into(),
                ..rule(None)
            },
        ];
        for rule in bad {
            assert!(
                Alarms::new(std::slice::from_ref(&rule), None, T0).is_err(),
                "{rule:?}"
            );
        }
        assert!(
            Alarms::new(&[rule(None), rule(None)], None, T0).is_err(),
            "duplicate names"
        );
        assert!(Alarms::new(&[], Some("https://x".into()), T0).is_err());
    }

    /// A signed-in viewer sees the alarms on its own account's streams only.
    #[test]
    fn views_for_an_account() {
        let alarms = Alarms::new(
            &[
                rule(None),
                AlarmRule {
                    alarm_name: "theirs".into(),
                    account_id: Some("111111111111".into()),
                    ..rule(None)
                },
                AlarmRule {
                    alarm_name: "ours-named".into(),
                    account_id: Some("000000000000".into()),
                    ..rule(None)
                },
            ],
            None,
            T0,
        )
        .unwrap();
        let names = |account: Option<&str>| -> Vec<String> {
            alarms
                .views_for(account, "000000000000")
                .into_iter()
                .map(|v| v.alarm_name)
                .collect()
        };
        assert_eq!(names(None), ["busy", "theirs", "ours-named"]);
        assert_eq!(names(Some("000000000000")), ["busy", "ours-named"]);
        assert_eq!(names(Some("111111111111")), ["theirs"]);
        assert!(names(Some("222222222222")).is_empty());
    }
}
