//! Failover runbooks: TOML → a validated `Runbook`, before any I/O. Same
//! rules as policies: kebab-case keys, unknown keys are errors, and every
//! error names the file, the line, the step and the key.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::base::toml_loc::{key_in_message, toml_line, Spans};
use crate::base::{human_duration, parse_duration_ms as parse_duration};
use crate::error::{Error, Result};
use crate::failover::step::kinds::StepKind;
use crate::notify::{ChannelSpec, Severity};

/// When a runbook's `[notify]` sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Start,
    Failure,
    End,
    /// The primary answered: nothing was changed (low severity by default).
    Refused,
    /// SIGTERM / Ctrl-C stopped the run between steps.
    Interrupted,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Failure => "failure",
            Event::End => "end",
            Event::Refused => "refused",
            Event::Interrupted => "interrupted",
        }
    }
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cexdr/failover";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRunbook {
    name: String,
    description: Option<String>,
    from_site: String,
    to_site: String,
    state_dir: Option<PathBuf>,
    cool_down: Option<String>,
    notify: Option<RawNotify>,
    #[serde(default, rename = "channel")]
    channels: Vec<toml::Table>,
    #[serde(default, rename = "step")]
    steps: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNotify {
    channels: Vec<String>,
    on: Option<Vec<Event>>,
    refusal_severity: Option<Severity>,
}

/// Keys every step has, whatever its kind.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawCommon {
    name: String,
    timeout: Option<String>,
    retries: Option<u32>,
    backoff: Option<String>,
    on_failure: Option<OnFailure>,
    service_restored: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    Abort,
    Continue,
}

#[derive(Debug, Clone)]
pub struct Runbook {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub from_site: String,
    pub to_site: String,
    pub state_dir: PathBuf,
    pub cool_down: Duration,
    /// Channels that get the start / failure / end messages.
    pub notify: Vec<String>,
    pub notify_on: Vec<Event>,
    /// Severity of the "refused" message (default info).
    pub refusal_severity: Severity,
    pub channels: Vec<ChannelSpec>,
    pub steps: Vec<StepSpec>,
    /// SHA-256 of the file's text: the journal remembers which runbook it ran.
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct StepSpec {
    pub name: String,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub on_failure: OnFailure,
    /// The RTO ends when this step is done (default: the last verify step).
    pub service_restored: bool,
    pub kind: StepKind,
}

impl StepSpec {
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }
}

/// The file and where its keys are: errors at the key's line.
struct Where<'a> {
    file: &'a Path,
    spans: Spans<'a>,
}

impl Where<'_> {
    fn key(&self, line: Option<usize>, key: &str, msg: String) -> Error {
        Error::config(self.file, line, Some(key), format!("key `{key}`: {msg}"))
    }

    /// A top-level key of the runbook.
    fn top(&self, key: &str, msg: String) -> Error {
        self.key(self.spans.top(key), key, msg)
    }
}

/// The runbook's `[notify]`, checked against its channels.
struct Notify {
    channels: Vec<String>,
    on: Vec<Event>,
    refusal_severity: Severity,
}

fn check_notify(
    at: &Where<'_>,
    raw: Option<RawNotify>,
    channel_names: &BTreeSet<String>,
) -> Result<Notify> {
    let refusal_severity = raw
        .as_ref()
        .and_then(|n| n.refusal_severity)
        .unwrap_or(Severity::Info);
    let Some(n) = raw else {
        return Ok(Notify {
            channels: Vec::new(),
            on: Vec::new(),
            refusal_severity,
        });
    };
    for c in &n.channels {
        if !channel_names.contains(c) {
            return Err(at.key(
                at.spans.in_table("notify", Some("channels")),
                "channels",
                format!("[notify] names channel {c:?}, which no [[channel]] defines"),
            ));
        }
    }
    let on = n.on.unwrap_or_else(|| {
        vec![
            Event::Start,
            Event::Failure,
            Event::End,
            Event::Refused,
            Event::Interrupted,
        ]
    });
    Ok(Notify {
        channels: n.channels,
        on,
        refusal_severity,
    })
}

/// Every `[[step]]` in order: at least one, names unique, one
/// `service-restored` at most.
fn check_steps(
    at: &Where<'_>,
    tables: Vec<toml::Table>,
    channel_names: &BTreeSet<String>,
) -> Result<Vec<StepSpec>> {
    if tables.is_empty() {
        return Err(Error::config(
            at.file,
            None,
            Some("step"),
            "the runbook defines no [[step]]",
        ));
    }
    let mut steps: Vec<StepSpec> = Vec::new();
    let mut names = BTreeSet::new();
    for (i, mut t) in tables.into_iter().enumerate() {
        let label = t
            .get("name")
            .and_then(|v| v.as_str())
            .map(|s| format!("step {s:?}"))
            .unwrap_or_else(|| format!("step #{}", i + 1));
        let err = |key: Option<&str>, msg: String| {
            Error::config(
                at.file,
                at.spans.in_array("step", i, key),
                key,
                match key {
                    Some(k) => format!("{label}: key `{k}`: {msg}"),
                    None => format!("{label}: {msg}"),
                },
            )
        };
        let c = read_common(&err, &mut t)?;
        if !names.insert(c.name.clone()) {
            return Err(err(Some("name"), "another step has the same name".into()));
        }
        let kind = read_kind(&err, t)?;
        let step = check_step(&err, c, kind, channel_names)?;
        if step.service_restored && steps.iter().any(|s| s.service_restored) {
            return Err(err(
                Some("service-restored"),
                "only one step marks the service as restored (the RTO ends there)".into(),
            ));
        }
        steps.push(step);
    }
    Ok(steps)
}

/// An error at a key of one step (or at its header).
type StepErr<'a> = dyn Fn(Option<&str>, String) -> Error + 'a;

/// A step's common keys, taken out of its table.
fn read_common(err: &StepErr<'_>, t: &mut toml::Table) -> Result<RawCommon> {
    let mut common = toml::Table::new();
    for k in [
        "name",
        "timeout",
        "retries",
        "backoff",
        "on-failure",
        "service-restored",
    ] {
        if let Some(v) = t.remove(k) {
            common.insert(k.into(), v);
        }
    }
    let c: RawCommon = toml::Value::Table(common).try_into().map_err(|e| {
        let msg = e.message().replace('\n', " ");
        err(key_in_message(&msg).as_deref(), msg)
    })?;
    if !valid_name(&c.name) {
        return Err(err(
            Some("name"),
            "use letters, digits, '-', '_' and '.'".into(),
        ));
    }
    Ok(c)
}

/// What is left of a step's table after its common keys: exactly its
/// kind's keys.
fn read_kind(err: &StepErr<'_>, t: toml::Table) -> Result<StepKind> {
    if !t.contains_key("kind") {
        return Err(err(
            Some("kind"),
            format!("missing; one of {}", StepKind::NAMES.join(", ")),
        ));
    }
    let kind: StepKind = toml::Value::Table(t).try_into().map_err(|e| {
        let msg = e.message().replace('\n', " ");
        err(key_in_message(&msg).as_deref(), msg)
    })?;
    Ok(kind)
}

/// The kind's own checks, the step's durations, and the gate rules.
fn check_step(
    err: &StepErr<'_>,
    c: RawCommon,
    kind: StepKind,
    channel_names: &BTreeSet<String>,
) -> Result<StepSpec> {
    kind.step()
        .validate(channel_names)
        .map_err(|(key, msg)| err(Some(key), msg))?;
    let timeout = match &c.timeout {
        Some(s) => parse_duration(s).map_err(|m| err(Some("timeout"), m.to_string()))?,
        None => kind.step().default_timeout(),
    };
    if timeout.is_zero() {
        return Err(err(Some("timeout"), "must be greater than zero".into()));
    }
    let backoff = match &c.backoff {
        Some(s) => parse_duration(s).map_err(|m| err(Some("backoff"), m.to_string()))?,
        None => Duration::from_secs(2),
    };
    let on_failure = c.on_failure.unwrap_or(OnFailure::Abort);
    if kind.step().is_gate() {
        // A live primary is not a transient error: never retried, never skipped.
        if c.retries.unwrap_or(0) != 0 {
            return Err(err(
                Some("retries"),
                format!("{} is not retried (it already probes N times)", kind.name()),
            ));
        }
        if on_failure != OnFailure::Abort {
            return Err(err(
                Some("on-failure"),
                format!(
                    "{} must abort: a failover over a live primary splits the brain",
                    kind.name()
                ),
            ));
        }
    }
    Ok(StepSpec {
        name: c.name,
        service_restored: c.service_restored.unwrap_or(false),
        timeout,
        retries: c.retries.unwrap_or(0),
        backoff,
        on_failure,
        kind,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl Runbook {
    pub fn load(file: &Path) -> Result<Runbook> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::config(file, None, None, format!("cannot read runbook file: {e}"))
        })?;
        Runbook::parse(file, &text)
    }

    /// Read (serde, strict), then checked top to bottom: the runbook's own
    /// keys, its channels and `[notify]`, each step; errors at the key.
    pub fn parse(file: &Path, text: &str) -> Result<Runbook> {
        let raw: RawRunbook = toml::from_str(text).map_err(|e| {
            Error::config(
                file,
                toml_line(text, &e),
                None,
                e.message().replace('\n', " "),
            )
        })?;
        let at = Where {
            file,
            spans: Spans::new(text),
        };
        if !valid_name(&raw.name) {
            return Err(at.top(
                "name",
                "use letters, digits, '-', '_' and '.' (it names the state folder)".into(),
            ));
        }
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let state_dir = match raw.state_dir {
            Some(p) if p.is_absolute() => p,
            Some(p) => base.join(p),
            None => PathBuf::from(DEFAULT_STATE_DIR),
        };
        let cool_down = match &raw.cool_down {
            Some(s) => parse_duration(s).map_err(|m| at.top("cool-down", m.to_string()))?,
            None => Duration::from_secs(3600),
        };
        let channels = crate::notify::parse_channels(file, text, raw.channels)?;
        let channel_names: BTreeSet<String> =
            channels.iter().map(|c| c.name().to_owned()).collect();
        let notify = check_notify(&at, raw.notify, &channel_names)?;
        let steps = check_steps(&at, raw.steps, &channel_names)?;
        Ok(Runbook {
            file: file.to_path_buf(),
            name: raw.name,
            description: raw.description,
            from_site: raw.from_site,
            to_site: raw.to_site,
            state_dir,
            cool_down,
            notify: notify.channels,
            notify_on: notify.on,
            refusal_severity: notify.refusal_severity,
            channels,
            steps,
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
        })
    }

    /// The step list as the journal fingerprints it: `name:kind` in order.
    pub fn plan_fingerprint(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| format!("{}:{}", s.name, s.kind_name()))
            .collect()
    }

    pub fn channel(&self, name: &str) -> Option<&ChannelSpec> {
        self.channels.iter().find(|c| c.name() == name)
    }

    /// The plan in plain words (`runbook check`, and before a failover).
    pub fn describe(&self) -> String {
        let mut out = format!(
            "runbook {} ({}): fail over from {} to {}\n",
            self.name,
            self.file.display(),
            self.from_site,
            self.to_site
        );
        if let Some(d) = &self.description {
            out.push_str(&format!("  {d}\n"));
        }
        out.push_str(&format!(
            "state: {}/{}  cool-down: {}\n",
            self.state_dir.display(),
            self.name,
            human_duration(self.cool_down)
        ));
        if !self.notify.is_empty() {
            let on: Vec<_> = self.notify_on.iter().map(|e| e.name()).collect();
            out.push_str(&format!(
                "notify {} on {}\n",
                self.notify.join(", "),
                on.join(", ")
            ));
        }
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!(
                "{:>2}. {} [{}] timeout {}, {} retr{}, on failure {}\n",
                i + 1,
                s.name,
                s.kind_name(),
                human_duration(s.timeout),
                s.retries,
                if s.retries == 1 { "y" } else { "ies" },
                match s.on_failure {
                    OnFailure::Abort => "abort",
                    OnFailure::Continue => "continue",
                }
            ));
            for line in s.kind.step().describe() {
                out.push_str(&format!("      {line}\n"));
            }
        }
        out
    }
}
