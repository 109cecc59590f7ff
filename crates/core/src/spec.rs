//! The event file (PRODUCT.md "Event file"): parsing from YAML or JSON, validation, and the
//! normalised form that the store keeps as an immutable event version.
//!
//! Every error names the field at fault (`retries.backoff: ...`). Parsing goes through one path
//! for both formats (YAML is first read into a JSON value) so the API and the CLI report the
//! same messages.
//!
//! Not here: reading `script_file` from disk (the CLI resolves it relative to the YAML file before
//! sending, because the server cannot see the client's files).

use std::collections::BTreeMap;
use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use cronium_model::{Capability, EventStatus, JobPolicy};

use crate::duration::{ByteSize, HumanDuration};
pub use crate::fanout::ServerCount;
use crate::schedule::{parse_timezone, Schedule};

/// Largest script accepted inline.
pub const MAX_SCRIPT_BYTES: usize = 1024 * 1024;
/// Default event timeout.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;
/// Largest `keep`.
pub const MAX_KEEP: u64 = 1_000_000;
/// Shortest `retain` (and `--retain`).
pub const MIN_RETAIN: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Bash,
    Python,
    Node,
    Http,
}

impl EventType {
    pub fn interpreter(self) -> Option<cronium_protocol::Interpreter> {
        use cronium_protocol::Interpreter;
        match self {
            EventType::Bash => Some(Interpreter::Bash),
            EventType::Python => Some(Interpreter::Python),
            EventType::Node => Some(Interpreter::Node),
            EventType::Http => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Start a new run even if one is still going.
    Allow,
    /// Drop the tick if a run of the event is queued or running.
    #[default]
    Skip,
    /// Queue the tick; it starts when the previous run has ended.
    Queue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Ticks missed during downtime are dropped.
    #[default]
    Skip,
    /// One run is made for all the ticks missed during downtime.
    RunOnce,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Total attempts including the first (1 = no retry).
    #[serde(default = "one")]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 100))]
    pub max_attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

fn one() -> u32 {
    1
}
fn default_backoff() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(300))
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            max_attempts: 1,
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

/// Execution mode on servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ServerMode {
    #[default]
    RunnerSsh,
    DirectSsh,
    Auto,
}

impl ServerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerMode::RunnerSsh => "runner-ssh",
            ServerMode::DirectSsh => "direct-ssh",
            ServerMode::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServersTarget {
    /// Servers by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "utoipa", schema(schema_with = crate::spec_schema::names))]
    pub servers: Vec<String>,
    /// Every server carrying one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub mode: ServerMode,
    /// How many servers run at once (default: all, bounded by the agent's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1))]
    pub concurrency: Option<u32>,
    /// `false`: the first failing server cancels the remaining ones.
    #[serde(default = "yes")]
    pub continue_on_failure: bool,
    /// How many servers must succeed for the job to be `partial` rather than `failed` when
    /// some fail (default: one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success: Option<ServerCount>,
    /// Rolling fan-out: the servers run in batches of this size, one after the other; a batch
    /// with a failure stops the ones after it (default: one batch of every server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<ServerCount>,
    /// The wait between two batches (needs `batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<HumanDuration>,
    /// Servers the health checks mark `unreachable` are not attempted: each is recorded as a
    /// `skipped` execution with the reason, and counts as a server that did not succeed (for
    /// `min_success` too).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_unreachable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerNetwork {
    /// No network at all (default).
    #[default]
    None,
    /// A fresh network for this job only.
    Isolated,
    /// A named, existing Docker network.
    #[serde(untagged)]
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ContainerTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU cores (fractions allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(exclusive_minimum = 0))]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1))]
    pub pids: Option<i64>,
    #[serde(default)]
    pub network: ContainerNetwork,
}

/// Where an event runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Target {
    #[default]
    Local,
    Servers(ServersTarget),
    Container(ContainerTarget),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetMap {
    #[serde(default)]
    servers: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    mode: Option<ServerMode>,
    #[serde(default)]
    concurrency: Option<u32>,
    #[serde(default)]
    continue_on_failure: Option<bool>,
    #[serde(default)]
    min_success: Option<ServerCount>,
    #[serde(default)]
    batch: Option<ServerCount>,
    #[serde(default)]
    pause: Option<HumanDuration>,
    #[serde(default)]
    skip_unreachable: Option<bool>,
    #[serde(default)]
    container: Option<ContainerTarget>,
    #[serde(default)]
    local: Option<Value>,
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Target;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`local`, `{ servers: [...] }` or `{ container: {...} }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Target, E> {
                match v {
                    "local" => Ok(Target::Local),
                    "container" => Ok(Target::Container(ContainerTarget::default())),
                    other => Err(E::custom(format!(
                        "unknown target `{other}`; expected `local`, `{{ servers: [...] }}` or `{{ container: {{...}} }}`"
                    ))),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Target, A::Error> {
                let m = TargetMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let server_keys = m.servers.is_some()
                    || m.tags.is_some()
                    || m.mode.is_some()
                    || m.concurrency.is_some()
                    || m.continue_on_failure.is_some()
                    || m.min_success.is_some()
                    || m.batch.is_some()
                    || m.pause.is_some()
                    || m.skip_unreachable.is_some();
                match (server_keys, m.container, m.local) {
                    (true, None, None) => {
                        let t = ServersTarget {
                            servers: m.servers.unwrap_or_default(),
                            tags: m.tags.unwrap_or_default(),
                            mode: m.mode.unwrap_or_default(),
                            concurrency: m.concurrency,
                            continue_on_failure: m.continue_on_failure.unwrap_or(true),
                            min_success: m.min_success,
                            batch: m.batch,
                            pause: m.pause,
                            skip_unreachable: m.skip_unreachable.unwrap_or(false),
                        };
                        if t.servers.is_empty() && t.tags.is_empty() {
                            return Err(de::Error::custom(
                                "a servers target needs `servers` (names) or `tags`",
                            ));
                        }
                        Ok(Target::Servers(t))
                    }
                    (false, Some(c), None) => Ok(Target::Container(c)),
                    (false, None, Some(_)) => Ok(Target::Local),
                    (false, None, None) => Err(de::Error::custom(
                        "empty target; expected `local`, `{ servers: [...] }` or `{ container: {...} }`",
                    )),
                    _ => Err(de::Error::custom(
                        "a target is either servers, container or local, not several",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Target::Local => s.serialize_str("local"),
            Target::Servers(t) => t.serialize(s),
            Target::Container(c) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("container", c)?;
                m.end()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// GET (default), POST, PUT, PATCH, DELETE, HEAD or OPTIONS, in any case.
    #[serde(default = "default_method")]
    #[cfg_attr(feature = "utoipa", schema(schema_with = crate::spec_schema::http_method))]
    pub method: String,
    #[cfg_attr(feature = "utoipa", schema(pattern = r"^\s*https?://"))]
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Statuses that count as success (default: any 2xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "utoipa", schema(schema_with = crate::spec_schema::http_statuses))]
    pub expect_status: Vec<u16>,
    /// Request timeout (default: the event's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

fn default_method() -> String {
    "GET".into()
}

/// How long finished jobs are kept: an event's `retain`, the server's `--retain`. Written as a
/// duration (`30d`, `12h`; plain numbers are seconds), or `forever` (also `0`): never pruned by
/// age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    Forever,
    /// Pruned once finished longer ago than this (never zero).
    For(std::time::Duration),
}

impl Retain {
    pub fn parse(s: &str) -> Result<Retain, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("forever") {
            return Ok(Retain::Forever);
        }
        let d = HumanDuration::parse(t)
            .map_err(|e| format!("{e}, or forever to keep everything"))?
            .0;
        if d.is_zero() {
            return Ok(Retain::Forever);
        }
        // A job's executions are finalised and its log read to the end just after it finishes;
        // nothing that young should be pruned under them.
        if d < MIN_RETAIN {
            return Err(format!(
                "`{t}` is too short: keep finished jobs at least 1m (or forever)"
            ));
        }
        Ok(Retain::For(d))
    }

    /// The age, None for [`Retain::Forever`].
    pub fn age(self) -> Option<std::time::Duration> {
        match self {
            Retain::Forever => None,
            Retain::For(d) => Some(d),
        }
    }
}

impl fmt::Display for Retain {
    /// The largest whole unit (`90d`, `36h`, `90s`): humantime would write `2months 29days...`
    /// for 90 days, its months being 30.44 days.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Retain::For(d) = self else {
            return f.write_str("forever");
        };
        let ms = d.as_millis();
        for (unit, len) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms % len == 0 {
                return write!(f, "{}{unit}", ms / len);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Retain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Retain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Retain::parse(&s).map_err(de::Error::custom),
            Value::Number(n) => match n.as_u64() {
                Some(secs) => Retain::parse(&secs.to_string()).map_err(de::Error::custom),
                None => Err(de::Error::custom(format!(
                    "{n} is not a duration; use e.g. 30d, 12h, or forever"
                ))),
            },
            other => Err(de::Error::custom(format!(
                "expected a duration such as 30d or 12h, or forever; got {other}"
            ))),
        }
    }
}

/// The schedule as written: a string, or a one-key map (`{every: 30s}`, `{at: ...}`, `{cron: ...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleText(pub String);

impl Serialize for ScheduleText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ScheduleText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(ScheduleText(s)),
            Value::Object(m) if m.len() == 1 => {
                let (k, v) = m
                    .into_iter()
                    .next()
                    .ok_or_else(|| de::Error::custom("empty"))?;
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                match k.as_str() {
                    "every" | "at" => Ok(ScheduleText(format!("{k} {v}"))),
                    "cron" => Ok(ScheduleText(v)),
                    _ => Err(de::Error::custom(format!(
                        "unknown schedule kind `{k}`; expected cron text, `every: 30s` or `at: <RFC 3339>`"
                    ))),
                }
            }
            _ => Err(de::Error::custom(
                "expected cron text, `every: 30s` or `at: <RFC 3339>`",
            )),
        }
    }
}

/// An event as written in an event file or an API body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(example = json!({
    "name": "nightly-backup", "type": "bash", "script": "echo backing up",
    "schedule": "0 30 2 * * *", "timezone": "Europe/Berlin", "timeout": "10m",
    "retries": {"max_attempts": 3, "backoff": "5s"}, "input": {"dry_run": false}
})))]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    #[cfg_attr(feature = "utoipa", schema(schema_with = crate::spec_schema::name))]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Only meaningful to the CLI, which replaces it with `script` (the API refuses it, so the
    /// OpenAPI document leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(ignore))]
    pub script_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleText>,
    /// An IANA time zone (`Europe/Berlin`); default UTC.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub retries: Retries,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub missed: Missed,
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(schema_with = crate::spec_schema::env))]
    pub env: BTreeMap<String, String>,
    /// The default input of a run: any JSON.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// The event pauses itself after this many runs; 0 = unlimited.
    #[serde(default)]
    pub max_executions: u64,
    /// `active` (default), `paused`, `draft` or `archived`.
    // Read from the file, but never part of the stored spec: an event's status lives only in
    // the store's `events.status` (see [`EventSpec::to_value`]). Skipped with
    // `skip_serializing_if` rather than `skip_serializing`, which would also drop it from the
    // OpenAPI schema of the request that carries it.
    #[serde(default, skip_serializing_if = "never_stored")]
    pub status: EventStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// How long finished jobs of this event are kept (None: the server's `--retain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<Retain>,
    /// The newest `keep` finished jobs are kept whatever their age (0: none by count).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub keep: u64,
    /// How the runtime helpers reach their data: `bundled` (files, offline) or `api` (live
    /// calls); None: the server's `--helpers` default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(schema_with = crate::spec_schema::helpers))]
    pub helpers: Option<cronium_protocol::HelperMode>,
    /// `true`: `POST /hooks/NAME`, signed with the hook's secret, runs the event with the
    /// request's JSON body as input.
    #[serde(default, skip_serializing_if = "is_false")]
    pub webhook: bool,
    /// Who hears about the event's jobs: each rule sends to a channel (`cronium channel add`)
    /// when a job ends as one of `on` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyRule>,
    /// Only an agent with all these tags (`cronium agent --tag`) runs the event's jobs; empty:
    /// any agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "utoipa", schema(schema_with = crate::spec_schema::names))]
    pub agent_tags: Vec<String>,
}

/// When a notification rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// The job failed, partly failed or timed out (a workflow run: failed or timed out).
    Failure,
    /// It succeeded after the previous one of the same event (or workflow) had not.
    Recovery,
    /// It succeeded.
    Success,
    /// It timed out.
    Timeout,
}

impl NotifyOn {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Failure => "failure",
            NotifyOn::Recovery => "recovery",
            NotifyOn::Success => "success",
            NotifyOn::Timeout => "timeout",
        }
    }
}

/// `{ on: [failure, recovery], channel: NAME }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NotifyRule {
    /// At least one of `failure`, `recovery`, `success`, `timeout`.
    pub on: Vec<NotifyOn>,
    /// A channel's name.
    #[cfg_attr(feature = "utoipa", schema(schema_with = crate::spec_schema::name))]
    pub channel: String,
}

/// Most notification rules an event or workflow has.
pub const MAX_NOTIFY_RULES: usize = 20;

/// The rules of `notify` that need no store: each has an `on` without repeats and a valid
/// channel name. Whether the channels exist is checked by the server at apply time.
pub fn validate_notify(at: FieldPath<'_>, rules: &[NotifyRule]) -> Result<(), SpecError> {
    if rules.len() > MAX_NOTIFY_RULES {
        return Err(at.error(
            "notify",
            format!("at most {MAX_NOTIFY_RULES} rules, got {}", rules.len()),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        if rule.on.is_empty() {
            return Err(at.error(
                &format!("notify[{i}].on"),
                "needs at least one of failure, recovery, success, timeout",
            ));
        }
        for (j, on) in rule.on.iter().enumerate() {
            if rule.on[..j].contains(on) {
                return Err(at.error(
                    &format!("notify[{i}].on[{j}]"),
                    format!("`{}` is listed twice", on.as_str()),
                ));
            }
        }
        validate_name(&rule.channel)
            .map_err(|e| at.error(&format!("notify[{i}].channel"), e.message))?;
    }
    Ok(())
}

/// Which rules of `rules` fire for an end described by `ons` (most specific first), per
/// channel: each channel gets one notification, for the first of `ons` one of its rules names.
pub fn matching_channels(rules: &[NotifyRule], ons: &[NotifyOn]) -> Vec<(String, NotifyOn)> {
    let mut out: Vec<(String, NotifyOn)> = Vec::new();
    for on in ons {
        for rule in rules {
            if rule.on.contains(on) && !out.iter().any(|(c, _)| *c == rule.channel) {
                out.push((rule.channel.clone(), *on));
            }
        }
    }
    out
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn never_stored(_: &EventStatus) -> bool {
    true
}

pub(crate) fn utc() -> String {
    "UTC".into()
}
pub(crate) fn default_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(DEFAULT_TIMEOUT_SECS))
}
pub(crate) fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A problem with an event file or body: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses a YAML document (JSON is accepted too, being YAML).
pub fn parse_yaml(text: &str) -> Result<EventSpec, SpecError> {
    let value: Value = serde_saphyr::from_str(text)
        .map_err(|e| SpecError::new("(document)", format!("not valid YAML: {e}")))?;
    from_value(value)
}

/// Parses a JSON document.
pub fn parse_json(text: &str) -> Result<EventSpec, SpecError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| SpecError::new("(body)", format!("not valid JSON: {e}")))?;
    from_value(value)
}

/// Deserialises and validates a JSON value, naming the field at fault.
pub fn from_value(value: Value) -> Result<EventSpec, SpecError> {
    refuse_lists_for_mappings(&value)?;
    let spec: EventSpec = deserialize(value, "expected a mapping of event fields")?;
    spec.validate()?;
    Ok(spec)
}

/// Parses an event version read back from the store: as [`from_value`], but the name may also
/// be `WORKFLOW/NODE`, the event an inline workflow node is stored as ([`inline_event_name`]),
/// which an event file cannot use. For the agent and whatever else reads stored versions, never
/// for user input.
pub fn from_stored_value(value: Value) -> Result<EventSpec, SpecError> {
    let spec: EventSpec = deserialize(value, "expected a mapping of event fields")?;
    match spec.name.split_once('/') {
        Some((workflow, node)) => {
            validate_name(workflow)?;
            validate_node_id(FieldPath::ROOT, "name", node)?;
        }
        None => validate_name(&spec.name)?,
    }
    spec.validate_fields(FieldPath::ROOT)?;
    Ok(spec)
}

/// The name of the event an inline workflow node is stored as. `/` cannot appear in the name
/// of an event file, so it never collides with a user's event.
pub fn inline_event_name(workflow: &str, node: &str) -> String {
    format!("{workflow}/{node}")
}

/// Deserialises a document (an object) through serde_path_to_error, so that an error names the
/// field at fault (`nodes[2].after.build`); `(document)` when the fault is the whole document.
pub(crate) fn deserialize<T: de::DeserializeOwned>(
    value: Value,
    not_a_mapping: &str,
) -> Result<T, SpecError> {
    if !value.is_object() {
        return Err(SpecError::new("(document)", not_a_mapping));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "(document)".to_string()
        } else {
            path
        };
        SpecError::new(field, e.into_inner().to_string())
    })
}

/// Where the fields being validated sit in their document: nothing for an event file,
/// `nodes[2]` for the inline script or the overrides of a workflow node, so that the one set of
/// event rules names `timeout` in an event file and `nodes[2].timeout` in a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPath<'a>(pub &'a str);

impl FieldPath<'_> {
    pub const ROOT: FieldPath<'static> = FieldPath("");

    /// The full name of `field` (`retries.backoff` or `nodes[2].retries.backoff`).
    pub fn at(&self, field: &str) -> String {
        if self.0.is_empty() {
            field.to_string()
        } else if field.is_empty() {
            self.0.to_string()
        } else {
            format!("{}.{field}", self.0)
        }
    }

    /// An error about `field` under this path.
    pub fn error(&self, field: &str, message: impl Into<String>) -> SpecError {
        SpecError::new(self.at(field), message)
    }
}

/// A `timeout` (of an event, or a node's override): never zero.
pub fn validate_timeout(
    at: FieldPath<'_>,
    field: &str,
    timeout: HumanDuration,
) -> Result<(), SpecError> {
    if timeout.0.is_zero() {
        return Err(at.error(field, "must be greater than zero"));
    }
    Ok(())
}

/// `retries` (of an event, or a node's override).
pub fn validate_retries(at: FieldPath<'_>, retries: &Retries) -> Result<(), SpecError> {
    if retries.max_attempts == 0 || retries.max_attempts > 100 {
        return Err(at.error(
            "retries.max_attempts",
            "must be between 1 and 100 (1 = no retry)",
        ));
    }
    if retries.max_backoff < retries.backoff {
        return Err(at.error(
            "retries.max_backoff",
            "must not be smaller than retries.backoff",
        ));
    }
    Ok(())
}

/// `env` (of an event, or a node's override): names a shell accepts.
pub fn validate_env(at: FieldPath<'_>, env: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for key in env.keys() {
        let ok = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(at.error(
                &format!("env.{key}"),
                "variable names use letters, digits and _ and do not start with a digit",
            ));
        }
    }
    Ok(())
}

/// A `target` (of an event, or a node's override): what its shape alone does not refuse.
pub fn validate_target(at: FieldPath<'_>, target: &Target) -> Result<(), SpecError> {
    if let Target::Container(c) = target {
        if let Some(cpus) = c.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                return Err(at.error(
                    "target.container.cpus",
                    "must be a positive number of cores",
                ));
            }
        }
        if let Some(p) = c.pids {
            if p < 1 {
                return Err(at.error("target.container.pids", "must be at least 1"));
            }
        }
    }
    if let Target::Servers(t) = target {
        if t.concurrency == Some(0) {
            return Err(at.error("target.concurrency", "must be at least 1"));
        }
        // With tags the number of servers is known only when the job runs (the agent refuses
        // a count larger than what it resolved); with names alone it is known now.
        if let (Some(ServerCount::Count(n)), true) = (t.min_success, t.tags.is_empty()) {
            if n as usize > t.servers.len() {
                return Err(at.error(
                    "target.min_success",
                    format!(
                        "{n} is more than the {} server(s) the target names",
                        t.servers.len()
                    ),
                ));
            }
        }
        if t.pause.is_some() && t.batch.is_none() {
            return Err(at.error(
                "target.pause",
                "is the wait between batches: set target.batch too",
            ));
        }
    }
    Ok(())
}

/// `agent_tags` (of an event, or a node's override): tag names as `cronium agent --tag` and
/// server tags take them, each named by its index (`agent_tags[1]`).
pub fn validate_agent_tags(at: FieldPath<'_>, tags: &[String]) -> Result<(), SpecError> {
    for (i, tag) in tags.iter().enumerate() {
        validate_name(tag).map_err(|e| at.error(&format!("agent_tags[{i}]"), e.message))?;
    }
    Ok(())
}

/// What an agent needs to run `target`: `local` (http events too: they run in the agent),
/// `container` or `ssh`.
pub fn target_capability(target: &Target) -> Capability {
    match target {
        Target::Local => Capability::Local,
        Target::Container(_) => Capability::Container,
        Target::Servers(_) => Capability::Ssh,
    }
}

/// The fields read into structs. serde also reads a struct from a list (its fields in order:
/// `retries: [3]`), which no event file means and the OpenAPI document does not allow, so a
/// list there is refused before deserialising. (`target` has its own deserialiser, which takes
/// only a string or a mapping, but its `container` is a struct again.)
const MAPPING_FIELDS: &[&str] = &["/retries", "/http", "/target/container"];

fn refuse_lists_for_mappings(value: &Value) -> Result<(), SpecError> {
    for pointer in MAPPING_FIELDS {
        if value.pointer(pointer).is_some_and(Value::is_array) {
            let field = pointer.trim_start_matches('/').replace('/', ".");
            return Err(SpecError::new(field, "expected a mapping, not a list"));
        }
    }
    Ok(())
}

impl EventSpec {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        self.validate_fields(FieldPath::ROOT)
    }

    /// Every rule but the name's, for the fields under `at` (an event file, or the inline
    /// script of a workflow node, whose name is made by the workflow).
    pub fn validate_fields(&self, at: FieldPath<'_>) -> Result<(), SpecError> {
        parse_timezone(&self.timezone).map_err(|e| at.error("timezone", e.to_string()))?;
        if let Some(s) = &self.schedule {
            Schedule::parse(&s.0, &self.timezone)
                .map_err(|e| at.error("schedule", e.to_string()))?;
        }
        // The document types it int64, as the database stores it.
        if i64::try_from(self.max_executions).is_err() {
            return Err(at.error("max_executions", format!("must be at most {}", i64::MAX)));
        }
        validate_timeout(at, "timeout", self.timeout)?;
        validate_retries(at, &self.retries)?;
        validate_env(at, &self.env)?;
        if self.script_file.is_some() {
            return Err(at.error(
                "script_file",
                "is resolved by `cronium event apply -f`; send the script text in `script`",
            ));
        }
        self.validate_body(at)?;
        validate_target(at, &self.target)?;
        if self.keep > MAX_KEEP {
            return Err(at.error(
                "keep",
                format!("must be at most {MAX_KEEP}, got {}", self.keep),
            ));
        }
        validate_notify(at, &self.notify)?;
        validate_agent_tags(at, &self.agent_tags)?;
        Ok(())
    }

    /// What the agent that runs this event's jobs must be able to do.
    pub fn capability(&self) -> Capability {
        target_capability(&self.target)
    }

    /// The script or the request, as the event's type wants.
    fn validate_body(&self, at: FieldPath<'_>) -> Result<(), SpecError> {
        match self.kind {
            EventType::Http => {
                let Some(http) = &self.http else {
                    return Err(at.error("http", "required for type http"));
                };
                if self.script.is_some() {
                    return Err(at.error("script", "not allowed for type http"));
                }
                let url = http.url.trim();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(at.error("http.url", "must start with http:// or https://"));
                }
                let m = http.method.to_ascii_uppercase();
                if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
                    .contains(&m.as_str())
                {
                    return Err(
                        at.error("http.method", format!("unknown method `{}`", http.method))
                    );
                }
                if let Some(bad) = http
                    .expect_status
                    .iter()
                    .find(|s| !(100..=599).contains(*s))
                {
                    return Err(
                        at.error("http.expect_status", format!("{bad} is not an HTTP status"))
                    );
                }
                if !matches!(self.target, Target::Local) {
                    return Err(at.error(
                        "target",
                        "http events run in the agent: target must be local",
                    ));
                }
            }
            _ => {
                if self.http.is_some() {
                    return Err(at.error("http", "only allowed for type http"));
                }
                match &self.script {
                    None => {
                        return Err(at.error(
                            "script",
                            "required for script events (or script_file with the CLI)",
                        ))
                    }
                    Some(s) if s.trim().is_empty() => return Err(at.error("script", "is empty")),
                    Some(s) if s.len() > MAX_SCRIPT_BYTES => {
                        return Err(at.error(
                            "script",
                            format!(
                                "is {} bytes; the limit is {} bytes",
                                s.len(),
                                MAX_SCRIPT_BYTES
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// The job policy every job of this event gets (what the store keeps beside the spec).
    pub fn policy(&self) -> JobPolicy {
        JobPolicy {
            max_attempts: i32::try_from(self.retries.max_attempts).unwrap_or(i32::MAX),
            backoff_ms: self.retries.backoff.as_millis(),
            max_backoff_ms: self.retries.max_backoff.as_millis(),
            timeout_ms: self.timeout.as_millis(),
            max_executions: i64::try_from(self.max_executions).unwrap_or(i64::MAX),
        }
    }

    /// The parsed schedule, if any. Only call on a validated spec.
    pub fn parsed_schedule(&self) -> Option<Schedule> {
        self.schedule
            .as_ref()
            .and_then(|s| Schedule::parse(&s.0, &self.timezone).ok())
    }

    /// The normalised JSON form stored as an event version. It has no `status`: that is kept
    /// beside the spec (`events.status`), so that pausing an event never rewrites its spec and
    /// no second copy can disagree.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// What [`validate_name`] accepts, as a regular expression (for the OpenAPI document): 1 to 100
/// of `[a-z0-9._-]`, except `.` and `..` (written without look-ahead, which not every JSON
/// Schema tool supports).
pub const NAME_PATTERN: &str =
    r"^(?:[a-z0-9_-][a-z0-9._-]{0,99}|\.[a-z0-9_-][a-z0-9._-]{0,98}|\.\.[a-z0-9._-]{1,98})$";

/// Names are unique and used in URLs and CLI arguments: `[a-z0-9-_.]`, 1 to 100 characters.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    if name.is_empty() || name.len() > 100 {
        return Err(SpecError::new("name", "must be 1 to 100 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(*c)))
    {
        return Err(SpecError::new(
            "name",
            format!("`{name}` contains `{c}`; use lowercase letters, digits, -, _ and ."),
        ));
    }
    if name == "." || name == ".." {
        return Err(SpecError::new("name", "cannot be . or .."));
    }
    Ok(())
}

/// A workflow node's id: `[a-z0-9-_]`, 1 to 64 characters (no `.`, so that `nodes.<id>` in an
/// input reads as one key).
pub fn validate_node_id(at: FieldPath<'_>, field: &str, id: &str) -> Result<(), SpecError> {
    if id.is_empty() || id.len() > 64 {
        return Err(at.error(field, "must be 1 to 64 characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(*c)))
    {
        return Err(at.error(
            field,
            format!("`{id}` contains `{c}`; use lowercase letters, digits, - and _"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FULL: &str = r#"
name: nightly-backup
type: python
script: |
  import cronium
  cronium.output({"files": 12})
schedule: "0 30 2 * * *"
timezone: Europe/Berlin
timeout: 10m
retries: { max_attempts: 3, backoff: 5s, max_backoff: 5m }
overlap: skip
missed: skip
target: { servers: [web1, web2], mode: runner-ssh }
env: { LOG_LEVEL: info }
input: { dry_run: false }
max_executions: 0
status: active
"#;

    /// Regression (found by the API fuzzer): `target: {container: [null, null]}` was accepted,
    /// serde reading the list as the container's fields in order.
    #[test]
    fn a_list_where_a_mapping_belongs_is_refused_naming_the_field() {
        for (text, field) in [
            (
                "{name: a, type: bash, script: x, target: {container: [null, null]}}",
                "target.container",
            ),
            ("{name: a, type: bash, script: x, retries: [3]}", "retries"),
            ("{name: a, type: http, http: [GET, 'http://x']}", "http"),
        ] {
            let err = parse_yaml(text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
        }
        assert!(parse_yaml("{name: a, type: bash, script: x, target: {container: {}}}").is_ok());
    }

    /// Regression (found by the API fuzzer): a `max_executions` over the int64 the document
    /// (and the database) gives it was accepted.
    #[test]
    fn max_executions_fits_an_int64() {
        let err =
            parse_yaml("{name: a, type: bash, script: x, max_executions: 9223372036854775808}")
                .unwrap_err();
        assert_eq!(err.field, "max_executions", "{err}");
        assert!(parse_yaml(
            "{name: a, type: bash, script: x, max_executions: 9223372036854775807}"
        )
        .is_ok());
    }

    #[test]
    fn product_example_parses() {
        let s = parse_yaml(FULL).unwrap();
        assert_eq!(s.name, "nightly-backup");
        assert_eq!(s.kind, EventType::Python);
        assert_eq!(s.timeout.0.as_secs(), 600);
        assert_eq!(s.retries.max_attempts, 3);
        match &s.target {
            Target::Servers(t) => {
                assert_eq!(t.servers, ["web1", "web2"]);
                assert_eq!(t.mode, ServerMode::RunnerSsh);
            }
            other => panic!("{other:?}"),
        }
        // The normalised form parses back to the same spec.
        let again = from_value(s.to_value()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn status_is_read_but_never_stored_in_the_spec() {
        let s = parse_yaml(
            "name: x
type: bash
script: echo
status: paused
",
        )
        .unwrap();
        assert_eq!(s.status, EventStatus::Paused);
        assert_eq!(s.to_value().get("status"), None, "{}", s.to_value());
        let err = parse_yaml(
            "name: x
type: bash
script: echo
status: sleeping
",
        )
        .unwrap_err();
        assert_eq!(err.field, "status", "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "name: x\ntype: bash\nscript: echo\nsurprise: 1\n",
                "surprise",
                "unknown field",
            ),
            (
                "name: x\ntype: bash\nscript: echo\ntimeout: forever\n",
                "timeout",
                "not a duration",
            ),
            (
                "name: x\ntype: bash\nscript: echo\nretries: { backoff: soon }\n",
                "retries.backoff",
                "not a duration",
            ),
            (
                "name: x\ntype: bash\nscript: echo\nschedule: '61 * * * *'\n",
                "schedule",
                "invalid cron",
            ),
            (
                "name: x\ntype: bash\nscript: echo\ntimezone: Mars/Base\n",
                "timezone",
                "Mars/Base",
            ),
            (
                "name: Bad Name\ntype: bash\nscript: echo\n",
                "name",
                "contains",
            ),
            ("name: x\ntype: ruby\nscript: echo\n", "type", "ruby"),
            ("name: x\ntype: bash\n", "script", "required"),
            (
                "name: x\ntype: http\nhttp: { url: 'ftp://a' }\n",
                "http.url",
                "http://",
            ),
            (
                "name: x\ntype: bash\nscript: echo\ntarget: { container: { memory: lots } }\n",
                "target",
                "not a size",
            ),
            (
                "name: x\ntype: bash\nscript: echo\ntarget: moon\n",
                "target",
                "unknown target",
            ),
        ];
        for (yaml, field, needle) in cases {
            let e = parse_yaml(yaml).unwrap_err();
            assert!(
                e.field.starts_with(field),
                "{yaml}: field {} ({e})",
                e.field
            );
            assert!(e.to_string().contains(needle), "{yaml}: {e}");
        }
    }

    #[test]
    fn schedule_forms() {
        for (s, ok) in [
            ("schedule: { every: 30s }", true),
            ("schedule: 'every: 30s'", true),
            ("schedule: { at: '2030-01-01T00:00:00Z' }", true),
            ("schedule: '*/5 * * * *'", true),
            ("schedule: { often: 1 }", false),
        ] {
            let doc = format!("name: x\ntype: bash\nscript: echo\n{s}\n");
            assert_eq!(parse_yaml(&doc).is_ok(), ok, "{s}: {:?}", parse_yaml(&doc));
        }
    }

    #[test]
    fn oversized_script_is_refused() {
        let big = "x".repeat(MAX_SCRIPT_BYTES + 1);
        let v = serde_json::json!({"name": "x", "type": "bash", "script": big});
        let e = from_value(v).unwrap_err();
        assert_eq!(e.field, "script");
    }

    #[test]
    fn retain_and_keep() {
        let base = "name: x\ntype: bash\nscript: echo\n";
        let s = parse_yaml(base).unwrap();
        assert_eq!((s.retain, s.keep), (None, 0));
        // Absent, they leave the normalised form (and so the stored version) as it was.
        let v = s.to_value();
        assert!(v.get("retain").is_none() && v.get("keep").is_none(), "{v}");
        for (field, retain) in [
            ("retain: 90d", Retain::For(Duration::from_secs(90 * 86_400))),
            ("retain: 36h", Retain::For(Duration::from_secs(36 * 3600))),
            ("retain: 600", Retain::For(Duration::from_secs(600))),
            ("retain: forever", Retain::Forever),
            ("retain: 0", Retain::Forever),
        ] {
            let s = parse_yaml(&format!("{base}{field}\nkeep: 10\n")).unwrap();
            assert_eq!((s.retain, s.keep), (Some(retain), 10), "{field}");
            assert_eq!(from_value(s.to_value()).unwrap(), s, "{field} round trip");
        }
        let v = parse_yaml(&format!("{base}retain: 90d\n"))
            .unwrap()
            .to_value();
        assert_eq!(v["retain"], "90d");
        for (field, needle) in [
            ("retain: soon", "not a duration"),
            ("retain: -5", "not a duration"),
            ("retain: [1]", "expected a duration"),
            ("retain: 30s", "at least 1m"),
            ("keep: -1", "invalid value"),
            ("keep: many", "invalid type"),
            ("keep: 1000001", "at most 1000000"),
        ] {
            let e = parse_yaml(&format!("{base}{field}\n")).unwrap_err();
            let name = field.split(':').next().unwrap();
            assert_eq!(e.field, name, "{field}: {e}");
            assert!(e.to_string().contains(needle), "{field}: {e}");
        }
    }

    #[test]
    fn retain_flag_forms() {
        assert_eq!(
            Retain::parse("30d"),
            Ok(Retain::For(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(Retain::parse("Forever"), Ok(Retain::Forever));
        assert_eq!(Retain::parse("0"), Ok(Retain::Forever));
        assert!(Retain::parse("1 fortnight")
            .unwrap_err()
            .contains("forever"));
        assert!(Retain::parse("59s").unwrap_err().contains("at least 1m"));
        assert_eq!(
            Retain::parse("60s"),
            Ok(Retain::For(Duration::from_secs(60)))
        );
        assert_eq!(
            Retain::For(Duration::from_millis(61500)).to_string(),
            "61500ms"
        );
        assert_eq!(Retain::For(Duration::from_secs(90)).to_string(), "90s");
    }

    #[test]
    fn malformed_yaml_is_reported() {
        let e = parse_yaml("name: [unclosed\n").unwrap_err();
        assert!(e.message.contains("YAML"), "{e}");
    }

    #[test]
    fn webhook_and_notify_are_read_and_checked() {
        let base = "name: a\ntype: bash\nscript: echo\n";
        let s = parse_yaml(base).unwrap();
        assert!(!s.webhook && s.notify.is_empty());
        // Absent, they leave the stored form as it was (no new version for old events).
        assert!(s.to_value().get("webhook").is_none() && s.to_value().get("notify").is_none());
        let s = parse_yaml(&format!(
            "{base}webhook: true\nnotify:\n  - {{ on: [failure, recovery], channel: ops }}\n"
        ))
        .unwrap();
        assert!(s.webhook);
        assert_eq!(
            s.notify,
            vec![NotifyRule {
                on: vec![NotifyOn::Failure, NotifyOn::Recovery],
                channel: "ops".into()
            }]
        );
        for (extra, field) in [
            ("notify:\n  - { on: [], channel: ops }\n", "notify[0].on"),
            (
                "notify:\n  - { on: [failure, failure], channel: ops }\n",
                "notify[0].on[1]",
            ),
            (
                "notify:\n  - { on: [failure], channel: 'Bad Name' }\n",
                "notify[0].channel",
            ),
            (
                "notify:\n  - { on: [sometimes], channel: ops }\n",
                "notify[0].on[0]",
            ),
            ("notify:\n  - { on: [failure] }\n", "notify[0]"),
        ] {
            let e = parse_yaml(&format!("{base}{extra}")).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
        }
    }

    #[test]
    fn each_channel_gets_the_most_specific_matching_rule() {
        let rules = vec![
            NotifyRule {
                on: vec![NotifyOn::Success],
                channel: "a".into(),
            },
            NotifyRule {
                on: vec![NotifyOn::Recovery, NotifyOn::Failure],
                channel: "a".into(),
            },
            NotifyRule {
                on: vec![NotifyOn::Failure],
                channel: "b".into(),
            },
        ];
        assert_eq!(
            matching_channels(&rules, &[NotifyOn::Recovery, NotifyOn::Success]),
            vec![("a".to_string(), NotifyOn::Recovery)]
        );
        assert_eq!(
            matching_channels(&rules, &[NotifyOn::Timeout, NotifyOn::Failure]),
            vec![
                ("a".to_string(), NotifyOn::Failure),
                ("b".to_string(), NotifyOn::Failure)
            ]
        );
        assert!(matching_channels(&rules, &[]).is_empty());
    }

    #[test]
    fn fan_out_controls_are_read_from_yaml_and_json_and_stored_back() {
        let yaml = "name: x\ntype: bash\nscript: echo\ntarget:\n  tags: [web]\n  \
                    min_success: '60%'\n  batch: 2\n  pause: 30s\n";
        let json = r#"{"name": "x", "type": "bash", "script": "echo",
            "target": {"tags": ["web"], "min_success": "60%", "batch": 2, "pause": "30s"}}"#;
        for spec in [parse_yaml(yaml).unwrap(), parse_json(json).unwrap()] {
            let Target::Servers(t) = &spec.target else {
                panic!("not a servers target: {:?}", spec.target)
            };
            assert_eq!(t.min_success, Some(ServerCount::Percent(60)));
            assert_eq!(t.batch, Some(ServerCount::Count(2)));
            assert_eq!(t.pause.map(|p| p.0.as_secs()), Some(30));
            // The stored version reads back the same.
            let stored = spec.to_value();
            assert_eq!(stored["target"]["min_success"], "60%", "{stored}");
            assert_eq!(stored["target"]["batch"], 2, "{stored}");
            assert_eq!(from_stored_value(stored).unwrap(), spec);
        }
        // Absent, they are absent from the stored version too (older versions are unchanged).
        let plain = parse_yaml("name: x\ntype: bash\nscript: echo\ntarget: {servers: [a]}\n")
            .unwrap()
            .to_value();
        let target = plain["target"].as_object().unwrap();
        for field in ["min_success", "batch", "pause", "skip_unreachable"] {
            assert!(!target.contains_key(field), "{plain}");
        }
        // skip_unreachable is kept, and makes a servers target by itself beside tags.
        let skip = parse_yaml(
            "{name: x, type: bash, script: e, target: {tags: [web], skip_unreachable: true}}",
        )
        .unwrap();
        assert!(matches!(
            &skip.target,
            Target::Servers(ServersTarget {
                skip_unreachable: true,
                ..
            })
        ));
        let stored = skip.to_value();
        assert_eq!(stored["target"]["skip_unreachable"], true, "{stored}");
        assert_eq!(from_stored_value(stored).unwrap(), skip);
        // min_success alone makes a servers target too.
        let t = parse_yaml(
            "{name: x, type: bash, script: e, target: {servers: [a, b], min_success: 2}}",
        )
        .unwrap();
        assert!(matches!(
            t.target,
            Target::Servers(ServersTarget {
                min_success: Some(ServerCount::Count(2)),
                ..
            })
        ));
    }

    #[test]
    fn bad_fan_out_values_are_refused_naming_the_field() {
        let base = "{name: x, type: bash, script: e, target: {tags: [web], ";
        for (fields, field, needle) in [
            ("min_success: 0", "target.min_success", "at least 1"),
            ("min_success: '0%'", "target.min_success", "1% to 100%"),
            ("min_success: '101%'", "target.min_success", "1% to 100%"),
            ("min_success: abc", "target.min_success", "percentage"),
            ("min_success: -2", "target.min_success", "percentage"),
            ("min_success: 1.5", "target.min_success", "percentage"),
            ("min_success: '3'", "target.min_success", "percentage"),
            ("batch: 0", "target.batch", "at least 1"),
            ("batch: '200%'", "target.batch", "percentage"),
            ("pause: soon, batch: 1", "target.pause", "not a duration"),
            ("pause: 10s", "target.pause", "target.batch"),
            (
                "skip_unreachable: sometimes",
                "target.skip_unreachable",
                "boolean",
            ),
            ("skip_unreachable: 1", "target.skip_unreachable", "boolean"),
        ] {
            let text = format!("{base}{fields}}}}}");
            let e = parse_yaml(&text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
            let e = parse_json(
                &serde_json::to_string(&serde_saphyr::from_str::<Value>(&text).unwrap()).unwrap(),
            )
            .unwrap_err();
            assert_eq!(e.field, field, "{text} as JSON: {e}");
        }
        // Named servers only: a count larger than they are is known at once.
        let e = parse_yaml(
            "{name: x, type: bash, script: e, target: {servers: [a, b], min_success: 3}}",
        )
        .unwrap_err();
        assert_eq!(e.field, "target.min_success", "{e}");
        assert!(e.message.contains("more than the 2 server(s)"), "{e}");
    }

    #[test]
    fn agent_tags_are_read_checked_and_give_the_capability() {
        let spec = parse_yaml("name: a\ntype: bash\nscript: x\nagent_tags: [eu, gpu]\n").unwrap();
        assert_eq!(spec.agent_tags, ["eu", "gpu"]);
        assert_eq!(
            spec.to_value()["agent_tags"],
            serde_json::json!(["eu", "gpu"])
        );
        assert_eq!(spec.capability(), Capability::Local);
        let spec = parse_yaml("name: a\ntype: bash\nscript: x\n").unwrap();
        assert!(spec.to_value().get("agent_tags").is_none());
        let spec = parse_yaml(
            "name: a\ntype: bash\nscript: x\ntarget: { container: { image: alpine } }\n",
        )
        .unwrap();
        assert_eq!(spec.capability(), Capability::Container);
        let spec =
            parse_yaml("name: a\ntype: bash\nscript: x\ntarget: { servers: [w] }\n").unwrap();
        assert_eq!(spec.capability(), Capability::Ssh);
        for (yaml, field, words) in [
            ("agent_tags: [eu, Bad]\n", "agent_tags[1]", "contains `B`"),
            ("agent_tags: [\"\"]\n", "agent_tags[0]", "1 to 100"),
            ("agent_tags: eu\n", "agent_tags", "sequence"),
            ("agent_tags: { a: 1 }\n", "agent_tags", "sequence"),
        ] {
            let err = parse_yaml(&format!("name: a\ntype: bash\nscript: x\n{yaml}")).unwrap_err();
            assert_eq!(err.field, field, "{yaml}: {err}");
            assert!(err.message.contains(words), "{yaml}: {err}");
        }
    }
}
