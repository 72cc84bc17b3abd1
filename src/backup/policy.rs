//! Policy files: TOML → a validated `Policy`, before any I/O touches a
//! source or a store. Keys are kebab-case and strict: an unknown key is an
//! error that names the file, the line and the key.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

pub use crate::backup::catalog::signing::Signer;
use crate::backup::catalog::Kind;
pub use crate::backup::plan::retention::Keep;
pub use crate::backup::source::files::FilesSpec;
use crate::backup::source::kinds::PolicyKeys;
pub use crate::backup::source::kinds::SourceSpec;
pub use crate::backup::source::mysql::{Consistency, MysqlSpec, TlsSpec};
pub use crate::backup::source::redis::RedisSpec;
use crate::backup::source::PolicyInput;
use crate::base::toml_loc::{key_of_value_error, struct_keys, toml_line, Spans};
pub use crate::base::{parse_duration, parse_size, Secret};
use crate::error::{Error, Result};
pub use crate::pipeline::encrypt::EncryptionSpec;
pub use crate::pipeline::Compression;
pub use crate::store::s3::S3Spec;
pub use crate::store::{ObjectLock, StoreSpec};

/// What a backup policy can notify about (`[notify] on = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupEvent {
    Failure,
    Success,
    VerificationFailure,
    PruneError,
}

// ---------------------------------------------------------------- raw TOML

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPolicy {
    store: RawStore,
    #[serde(default, rename = "job")]
    jobs: Vec<toml::Table>,
    daemon: Option<RawDaemon>,
    #[serde(default, rename = "channel")]
    channels: Vec<toml::Table>,
    notify: Option<RawNotify>,
}

/// `[notify]`: which channels hear about which backup events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNotify {
    channels: Vec<String>,
    on: Option<Vec<BackupEvent>>,
}

/// Validated `[notify]` (empty: nobody is notified).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotifySpec {
    pub channels: Vec<String>,
    pub on: std::collections::BTreeSet<BackupEvent>,
}

/// `[daemon]`: settings of `cexdr daemon` only (one-shot commands ignore it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDaemon {
    timezone: Option<String>,
    max_parallel: Option<usize>,
    jitter: Option<String>,
    catch_up: Option<bool>,
    prune: Option<bool>,
    incomplete_grace: Option<String>,
    shutdown_grace: Option<String>,
    metrics_listen: Option<String>,
    verify_after_backup: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStore {
    kind: String,
    path: Option<PathBuf>,
    bucket: Option<String>,
    prefix: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
    storage_class: Option<String>,
    sse: Option<String>,
    kms_key_id: Option<String>,
    part_size: Option<String>,
    upload_concurrency: Option<usize>,
    encryption: Option<RawEncryption>,
    signing_key_file: Option<PathBuf>,
    object_lock: Option<ObjectLock>,
}

/// `encryption = { recipients = ["age1…"] }` or a passphrase from env/file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawEncryption {
    recipients: Option<Vec<String>>,
    passphrase_env: Option<String>,
    passphrase_file: Option<PathBuf>,
}

/// The keys every `[[job]]` reads, whatever its kind; the rest of the table
/// belongs to the kind (`FromPolicy::Keys` beside each source), and a key of
/// another kind is an error (not silently ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawJob {
    name: String,
    kind: String,
    schedule: Option<String>,
    compression: Option<String>,
    compression_level: Option<u32>,
    keep: Option<Keep>,
    timeout: Option<String>,
    // daemon overrides of [daemon] jitter / catch-up
    jitter: Option<String>,
    catch_up: Option<bool>,
    verify_after_backup: Option<bool>,
    drill: Option<RawDrill>,
    encryption: Option<RawEncryption>,
}

/// One `[[job]]` table as read, before it is checked: the common keys, the
/// kind's own keys (None for a kind that does not exist) and the first key
/// that belongs to another kind.
#[derive(Debug)]
struct ReadJob {
    common: RawJob,
    source: Option<(Kind, PolicyKeys)>,
    misplaced: Option<&'static str>,
}

/// `drill = { schedule = "0 5 * * 0", target = "mysql://…", … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDrill {
    schedule: String,
    target: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    timeout: Option<String>,
    scratch: Option<PathBuf>,
    allow_source_server: Option<bool>,
    point_in_time: Option<String>,
}

// ---------------------------------------------------------------- validated

/// A job's restore drill: when, and into what scratch target.
#[derive(Debug, Clone)]
pub struct DrillSpec {
    pub schedule: Schedule,
    /// mysql: the scratch server.
    pub target: Option<String>,
    pub password: Secret,
    pub timeout: Option<Duration>,
    /// files: where scratch folders are made.
    pub scratch: Option<PathBuf>,
    pub allow_source_server: bool,
    /// mysql with a binlog archive: `point-in-time = "newest"` drills a
    /// point-in-time restore (base + archive replay) to the newest archived
    /// transaction instead of the base alone.
    pub point_in_time: bool,
}

/// Default time limit of a drill (restores of big dumps take a while; a
/// hung one must still end and clean up).
pub const DEFAULT_DRILL_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone)]
pub struct Policy {
    pub file: PathBuf,
    pub store: StoreSpec,
    /// Ed25519 key that signs manifests and verification records.
    pub signing_key_file: Option<PathBuf>,
    pub jobs: Vec<Job>,
    pub daemon: DaemonSpec,
    /// `[[channel]]` tables (Slack, webhook, email; see docs/operations.md).
    pub channels: Vec<crate::notify::ChannelSpec>,
    pub notify: NotifySpec,
}

/// Validated `[daemon]` table, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSpec {
    /// Zone in which cron schedules are read (default UTC).
    pub timezone: chrono_tz::Tz,
    /// At most this many jobs run at once.
    pub max_parallel: usize,
    /// Default random delay added to each scheduled start (per job: `jitter`).
    pub jitter: Duration,
    /// Default: run a missed run once at start-up (per job: `catch-up`).
    pub catch_up: bool,
    /// Prune a job after each of its successful backups.
    pub prune: bool,
    /// Folders without a manifest younger than this are left alone by prune.
    pub incomplete_grace: Duration,
    /// On SIGTERM, running jobs get this long to finish before they are stopped.
    pub shutdown_grace: Duration,
    /// Where `/metrics` (and `/report`) is served; None: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Read every backup back from the store once written (per job: `verify-after-backup`).
    pub verify_after_backup: bool,
}

impl Default for DaemonSpec {
    fn default() -> Self {
        DaemonSpec {
            timezone: chrono_tz::UTC,
            max_parallel: 1,
            jitter: Duration::ZERO,
            catch_up: false,
            prune: true,
            incomplete_grace: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(60),
            metrics_listen: Some(([127, 0, 0, 1], 9847).into()),
            verify_after_backup: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub schedule: Option<Schedule>,
    /// Daemon: incremental physical backups between the full ones.
    pub incremental: Option<Schedule>,
    pub compression: Compression,
    pub keep: Keep,
    pub timeout: Option<Duration>,
    /// Daemon: overrides `[daemon] jitter`.
    pub jitter: Option<Duration>,
    /// Daemon: overrides `[daemon] catch-up`.
    pub catch_up: Option<bool>,
    pub source: SourceSpec,
    /// Client-side encryption of the stored bytes (the job's, else the store's).
    pub encryption: Option<EncryptionSpec>,
    /// Overrides `[daemon] verify-after-backup`.
    pub verify_after_backup: Option<bool>,
    pub drill: Option<DrillSpec>,
}

impl Job {
    /// What prune needs of the job: its name and retention rules.
    pub fn prune_rules(&self) -> crate::backup::plan::prune::Rules<'_> {
        crate::backup::plan::prune::Rules {
            name: &self.name,
            keep: &self.keep,
        }
    }
}

/// A cron schedule as users write it: 5 fields or `@daily`-style.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expr: String,
    inner: cron::Schedule,
}

/// Why a `schedule` was not understood; each names the expression.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron expression {expr:?} has {fields} fields; write 5 (minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly/@yearly")]
    Fields { expr: String, fields: usize },
    #[error("cron expression {expr:?}: day-of-week {source}")]
    DayOfWeek {
        expr: String,
        #[source]
        source: DayOfWeekError,
    },
    #[error("cron expression {expr:?}: {source}")]
    Cron {
        expr: String,
        #[source]
        source: cron::error::Error,
    },
}

/// Why a cron(5) day-of-week field was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DayOfWeekError {
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("{0} is out of range (0-7, 0 and 7 are Sunday)")]
    OutOfRange(usize),
    #[error("range {0:?} runs backwards")]
    Backwards(String),
    #[error("step {0:?} is not a positive number")]
    Step(String),
}

/// A cron(5) day-of-week field with its numbers as names (`1-5` →
/// `MON,TUE,WED,THU,FRI`); names and `*` pass through.
fn dow_names(field: &str) -> std::result::Result<String, DayOfWeekError> {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let num = |t: &str| -> std::result::Result<Option<usize>, DayOfWeekError> {
        if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() {
            let n: usize = t
                .parse()
                .map_err(|_| DayOfWeekError::NotANumber(t.to_owned()))?;
            if n > 7 {
                return Err(DayOfWeekError::OutOfRange(n));
            }
            Ok(Some(n))
        } else {
            Ok(None)
        }
    };
    let mut out: Vec<String> = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        let range = match base.split_once('-') {
            Some((a, b)) => match (num(a)?, num(b)?) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => None,
            },
            None if step.is_some() && base != "*" => num(base)?.map(|a| (a, 7)),
            None => num(base)?.map(|a| (a, a)),
        };
        match range {
            Some((a, b)) => {
                if a > b {
                    return Err(DayOfWeekError::Backwards(base.to_owned()));
                }
                let step: usize = match step {
                    Some(s) => s
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| DayOfWeekError::Step(s.to_owned()))?,
                    None => 1,
                };
                let mut n = a;
                while n <= b {
                    if !out.iter().any(|o| o == NAMES[n]) {
                        out.push(NAMES[n].to_owned());
                    }
                    n += step;
                }
            }
            // `*`, `*/2` (the same days in both numberings), names.
            None => out.push(item.to_owned()),
        }
    }
    Ok(out.join(","))
}

impl Schedule {
    pub fn parse(expr: &str) -> std::result::Result<Self, ScheduleError> {
        let e = expr.trim();
        let full = if e.starts_with('@') {
            e.to_owned()
        } else {
            let n = e.split_whitespace().count();
            if n != 5 {
                return Err(ScheduleError::Fields {
                    expr: expr.to_owned(),
                    fields: n,
                });
            }
            // The cron crate wants a seconds field first, and numbers its
            // days of the week 1-7 from Sunday; cron(5) numbers them 0-7
            // from Sunday (0 and 7 both Sunday): pass days by name.
            let mut f: Vec<String> = e.split_whitespace().map(str::to_owned).collect();
            f[4] = dow_names(&f[4]).map_err(|source| ScheduleError::DayOfWeek {
                expr: expr.to_owned(),
                source,
            })?;
            format!("0 {}", f.join(" "))
        };
        let inner = cron::Schedule::from_str(&full).map_err(|source| ScheduleError::Cron {
            expr: expr.to_owned(),
            source,
        })?;
        Ok(Schedule {
            expr: e.to_owned(),
            inner,
        })
    }

    pub fn after(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.inner.after(&t)
    }

    /// Like `after`, with the fields read as local time in `tz`.
    pub fn after_in(
        &self,
        tz: chrono_tz::Tz,
        t: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.inner
            .after(&t.with_timezone(&tz))
            .map(|x| x.with_timezone(&Utc))
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

// ---------------------------------------------------------------- parsing helpers

/// Finds the line of a key in the text, for errors raised after parsing.
struct Locator<'a> {
    spans: Spans<'a>,
}

impl Locator<'_> {
    /// Line (1-based) of `key` in the `index`-th `[[job]]` table, or of the
    /// table header when the key is absent.
    fn job(&self, index: usize, key: Option<&str>) -> Option<usize> {
        self.spans.in_array("job", index, key)
    }
    /// Line of `key` in the table `[name]`, or of its header.
    fn section(&self, name: &str, key: Option<&str>) -> Option<usize> {
        self.spans.in_table(name, key)
    }
    fn store(&self, key: Option<&str>) -> Option<usize> {
        self.section("store", key)
    }
    fn daemon(&self, key: Option<&str>) -> Option<usize> {
        self.section("daemon", key)
    }
}

// ---------------------------------------------------------------- loading

impl Policy {
    /// The longest gap between consecutive runs of `job` over its next 50
    /// runs: the "interval" the missing-backup alert multiplies by 1.5.
    pub fn schedule_interval(&self, job: &Job, now: DateTime<Utc>) -> Option<f64> {
        let s = job.schedule.as_ref()?;
        let times: Vec<_> = s.after_in(self.daemon.timezone, now).take(51).collect();
        times
            .windows(2)
            .map(|w| (w[1] - w[0]).num_seconds() as f64)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    }

    /// The signer of the policy's `signing-key-file`, if it names one.
    pub fn signer(&self) -> Result<Option<std::sync::Arc<Signer>>> {
        match &self.signing_key_file {
            Some(f) => Ok(Some(std::sync::Arc::new(Signer::load(f)?))),
            None => Ok(None),
        }
    }

    pub fn load(file: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::config(file, None, None, format!("cannot read policy file: {e}"))
        })?;
        Policy::parse(file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Policy> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            Error::config(
                file,
                toml_line(text, &e),
                None,
                e.message().replace('\n', " "),
            )
        })?;
        let loc = Locator {
            spans: Spans::new(text),
        };
        // Every job's keys are read (strictly) before anything is checked,
        // as when the whole file was one serde struct.
        let read: Vec<ReadJob> = raw
            .jobs
            .into_iter()
            .enumerate()
            .map(|(i, t)| read_job(file, &loc, i, t))
            .collect::<Result<_>>()?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let store_encryption = match &raw.store.encryption {
            Some(e) => Some(validate_encryption(&base, e).map_err(|m| {
                Error::config(
                    file,
                    loc.store(Some("encryption")),
                    Some("encryption"),
                    format!("[store] key `encryption`: {m}"),
                )
            })?),
            None => None,
        };
        let signing_key_file = raw
            .store
            .signing_key_file
            .as_ref()
            .map(|p| resolve(&base, p));
        let store = validate_store(file, &loc, &base, raw.store)?;
        if read.is_empty() {
            return Err(Error::config(
                file,
                None,
                Some("job"),
                "the policy defines no [[job]]",
            ));
        }
        let mut names = BTreeSet::new();
        let mut jobs = Vec::new();
        for (i, j) in read.into_iter().enumerate() {
            let name = j.common.name.clone();
            let err = |key: &str, msg: String| {
                Error::config(
                    file,
                    loc.job(i, Some(key)),
                    Some(key),
                    format!("job {name:?}: key `{key}`: {msg}"),
                )
            };
            if !names.insert(name.clone()) {
                return Err(err("name", "another job has the same name".into()));
            }
            let mut job = validate_job(&base, &err, j)?;
            if job.encryption.is_none() {
                job.encryption = store_encryption.clone();
            }
            jobs.push(job);
        }
        let daemon = match raw.daemon {
            Some(d) => validate_daemon(file, &loc, d)?,
            None => DaemonSpec::default(),
        };
        let channels = crate::notify::parse_channels(file, text, raw.channels)?;
        let notify = match raw.notify {
            Some(n) => validate_notify(file, &loc, n, &channels)?,
            None => NotifySpec::default(),
        };
        Ok(Policy {
            file: file.to_path_buf(),
            store,
            signing_key_file,
            jobs,
            daemon,
            channels,
            notify,
        })
    }

    pub fn job(&self, name: &str) -> Result<&Job> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            let names: Vec<_> = self.jobs.iter().map(|j| j.name.as_str()).collect();
            Error::Usage(format!(
                "no job {name:?} in {} (jobs: {})",
                self.file.display(),
                names.join(", ")
            ))
        })
    }
}

/// `[notify]` names channels that `[[channel]]` tables define.
fn validate_notify(
    file: &Path,
    loc: &Locator,
    n: RawNotify,
    channels: &[crate::notify::ChannelSpec],
) -> Result<NotifySpec> {
    for c in &n.channels {
        if !channels.iter().any(|x| x.name() == c) {
            return Err(Error::config(
                file,
                loc.section("notify", Some("channels")),
                Some("channels"),
                format!("[notify] names channel {c:?}, which no [[channel]] defines"),
            ));
        }
    }
    use BackupEvent as B;
    let on =
        n.on.unwrap_or_else(|| vec![B::Failure, B::VerificationFailure, B::PruneError]);
    Ok(NotifySpec {
        channels: n.channels,
        on: on.into_iter().collect(),
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    crate::base::resolve_path(base, p)
}

/// Reads the `index`-th `[[job]]` table: the common keys into `RawJob`, the
/// kind's keys into its `PolicyKeys`; a key no kind reads is unknown. Serde
/// errors read as they did when the job was one struct: the message at the
/// key's line.
fn read_job(file: &Path, loc: &Locator, index: usize, mut t: toml::Table) -> Result<ReadJob> {
    let value_err = |e: toml::de::Error| {
        let key = key_of_value_error(&e);
        Error::config(
            file,
            loc.job(index, key.as_deref()),
            None,
            e.message().replace('\n', " "),
        )
    };
    let common_keys = struct_keys::<RawJob>();
    let source_keys = Kind::all_policy_keys();
    if let Some(k) = t
        .keys()
        .find(|k| !common_keys.contains(&k.as_str()) && !source_keys.contains(&k.as_str()))
    {
        let expected: Vec<String> = common_keys
            .iter()
            .chain(&source_keys)
            .map(|k| format!("`{k}`"))
            .collect();
        return Err(Error::config(
            file,
            loc.job(index, Some(k.as_str())),
            None,
            format!(
                "unknown field `{k}`, expected one of {}",
                expected.join(", ")
            ),
        ));
    }
    let kind = t
        .get("kind")
        .and_then(|v| v.as_str())
        .and_then(Kind::from_name);
    let own = kind.map(|k| k.policy_keys()).unwrap_or_default();
    let mut mine = toml::Table::new();
    let mut others = Vec::new();
    for k in source_keys {
        if let Some(v) = t.remove(k) {
            if own.contains(&k) {
                mine.insert(k.to_owned(), v);
            } else {
                others.push(k);
            }
        }
    }
    let common: RawJob = toml::Value::Table(t).try_into().map_err(value_err)?;
    let source = match kind {
        Some(k) => Some((k, k.read_keys(mine).map_err(value_err)?)),
        None => None,
    };
    Ok(ReadJob {
        common,
        source,
        misplaced: others.first().copied(),
    })
}

/// Why an `encryption = { … }` table is refused.
#[derive(Debug, thiserror::Error)]
enum EncryptionError {
    #[error("recipients: list at least one age public key")]
    NoRecipient,
    #[error("recipients: {0:?} is not an age X25519 public key (age1…)")]
    NotARecipient(String),
    #[error("set recipients, passphrase-env or passphrase-file")]
    NothingSet,
    #[error(
        "use recipients or one passphrase source, not several (age allows a passphrase only alone)"
    )]
    Several,
}

fn validate_encryption(
    base: &Path,
    e: &RawEncryption,
) -> std::result::Result<EncryptionSpec, EncryptionError> {
    match (&e.recipients, &e.passphrase_env, &e.passphrase_file) {
        (Some(r), None, None) => {
            if r.is_empty() {
                return Err(EncryptionError::NoRecipient);
            }
            for key in r {
                key.parse::<age::x25519::Recipient>()
                    .map_err(|_| EncryptionError::NotARecipient(key.clone()))?;
            }
            Ok(EncryptionSpec::Recipients(r.clone()))
        }
        (None, Some(v), None) => Ok(EncryptionSpec::Passphrase(Secret::Env(v.clone()))),
        (None, None, Some(f)) => Ok(EncryptionSpec::Passphrase(Secret::File(resolve(base, f)))),
        (None, None, None) => Err(EncryptionError::NothingSet),
        _ => Err(EncryptionError::Several),
    }
}

fn validate_store(file: &Path, loc: &Locator, base: &Path, s: RawStore) -> Result<StoreSpec> {
    let err = |key: &str, msg: String| {
        Error::config(
            file,
            loc.store(Some(key)),
            Some(key),
            format!("[store] key `{key}`: {msg}"),
        )
    };
    let local_only = [("path", s.path.is_some())];
    let s3_only = [
        ("bucket", s.bucket.is_some()),
        ("prefix", s.prefix.is_some()),
        ("region", s.region.is_some()),
        ("endpoint", s.endpoint.is_some()),
        ("path-style", s.path_style.is_some()),
        ("storage-class", s.storage_class.is_some()),
        ("sse", s.sse.is_some()),
        ("kms-key-id", s.kms_key_id.is_some()),
        ("part-size", s.part_size.is_some()),
        ("upload-concurrency", s.upload_concurrency.is_some()),
        ("object-lock", s.object_lock.is_some()),
    ];
    let reject = |keys: &[(&str, bool)], kind: &str| -> Result<()> {
        for (k, set) in keys {
            if *set {
                return Err(err(k, format!("does not apply to kind = \"{kind}\"")));
            }
        }
        Ok(())
    };
    match s.kind.as_str() {
        "local" => {
            reject(&s3_only, "local")?;
            let path = s
                .path
                .ok_or_else(|| err("path", "required for a local store".into()))?;
            Ok(StoreSpec::Local {
                path: resolve(base, &path),
            })
        }
        "s3" => {
            reject(&local_only, "s3")?;
            Ok(StoreSpec::S3(validate_s3(&err, s)?))
        }
        other => Err(err("kind", format!("{other:?} is not \"local\" or \"s3\""))),
    }
}

/// An s3 `[store]`: bucket and prefix usable as keys, sizes and counts in
/// the ranges S3 allows, encryption and object-lock settings it knows.
fn validate_s3(err: &dyn Fn(&str, String) -> Error, s: RawStore) -> Result<S3Spec> {
    let bucket = s
        .bucket
        .ok_or_else(|| err("bucket", "required for an s3 store".into()))?;
    if bucket.is_empty() {
        return Err(err("bucket", "must not be empty".into()));
    }
    let prefix = s.prefix.unwrap_or_default().trim_matches('/').to_owned();
    if prefix.split('/').any(|c| c == ".." || c == ".") {
        return Err(err("prefix", "must not contain . or .. components".into()));
    }
    let part_size = match s.part_size {
        Some(p) => parse_size(&p).map_err(|m| err("part-size", m.to_string()))?,
        None => 8 << 20,
    };
    if part_size < 5 << 20 {
        return Err(err("part-size", "S3 parts must be at least 5MiB".into()));
    }
    if part_size > 5 << 30 {
        return Err(err("part-size", "S3 parts must be at most 5GiB".into()));
    }
    if let Some(sse) = &s.sse {
        if sse != "AES256" && sse != "aws:kms" {
            return Err(err("sse", format!("{sse:?} is not AES256 or aws:kms")));
        }
    }
    if s.kms_key_id.is_some() && s.sse.as_deref() != Some("aws:kms") {
        return Err(err("kms-key-id", "needs sse = \"aws:kms\"".into()));
    }
    if let Some(l) = &s.object_lock {
        if l.mode != "GOVERNANCE" && l.mode != "COMPLIANCE" {
            return Err(err(
                "object-lock",
                format!("mode {:?} is not GOVERNANCE or COMPLIANCE", l.mode),
            ));
        }
        if l.days == 0 || l.days > 36500 {
            return Err(err(
                "object-lock",
                "days must be between 1 and 36500".into(),
            ));
        }
    }
    let upload_concurrency = s.upload_concurrency.unwrap_or(4);
    if upload_concurrency == 0 || upload_concurrency > 64 {
        return Err(err("upload-concurrency", "must be between 1 and 64".into()));
    }
    Ok(S3Spec {
        bucket,
        prefix,
        region: s.region.unwrap_or_else(|| "us-east-1".into()),
        endpoint: s.endpoint,
        path_style: s.path_style.unwrap_or(false),
        storage_class: s.storage_class,
        sse: s.sse,
        kms_key_id: s.kms_key_id,
        object_lock: s.object_lock,
        part_size,
        upload_concurrency,
    })
}

/// Top-level store folders that are not jobs.
pub const RESERVED_PREFIXES: &[&str] = &[
    "keys",
    "locks",
    "leases",
    crate::backup::catalog::segment::PREFIX,
];

fn validate_daemon(file: &Path, loc: &Locator, d: RawDaemon) -> Result<DaemonSpec> {
    let err = |key: &str, msg: String| {
        Error::config(
            file,
            loc.daemon(Some(key)),
            Some(key),
            format!("[daemon] key `{key}`: {msg}"),
        )
    };
    let mut out = DaemonSpec::default();
    if let Some(tz) = &d.timezone {
        out.timezone = tz.parse().map_err(|_| {
            err(
                "timezone",
                format!("{tz:?} is not an IANA time zone (e.g. \"UTC\", \"Europe/Berlin\")"),
            )
        })?;
    }
    if let Some(n) = d.max_parallel {
        if n == 0 || n > 64 {
            return Err(err("max-parallel", "must be between 1 and 64".into()));
        }
        out.max_parallel = n;
    }
    if let Some(j) = &d.jitter {
        out.jitter = parse_jitter(j).map_err(|m| err("jitter", m.to_string()))?;
    }
    if let Some(c) = d.catch_up {
        out.catch_up = c;
    }
    if let Some(p) = d.prune {
        out.prune = p;
    }
    if let Some(v) = d.verify_after_backup {
        out.verify_after_backup = v;
    }
    if let Some(g) = &d.incomplete_grace {
        out.incomplete_grace =
            parse_duration(g).map_err(|m| err("incomplete-grace", m.to_string()))?;
    }
    if let Some(g) = &d.shutdown_grace {
        out.shutdown_grace = parse_duration(g).map_err(|m| err("shutdown-grace", m.to_string()))?;
    }
    if let Some(a) = &d.metrics_listen {
        out.metrics_listen = if a.is_empty() {
            None
        } else {
            Some(a.parse().map_err(|_| {
                err(
                    "metrics-listen",
                    format!("{a:?} is not IP:PORT (e.g. \"127.0.0.1:9847\"; \"\" turns it off)"),
                )
            })?)
        };
    }
    Ok(out)
}

/// A jitter may be "0s" (none); other durations as `parse_duration`.
fn parse_jitter(s: &str) -> std::result::Result<Duration, crate::base::DurationError> {
    if s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

fn validate_job(base: &Path, err: &dyn Fn(&str, String) -> Error, read: ReadJob) -> Result<Job> {
    let j = &read.common;
    check_job_name(err, &j.name)?;
    let schedule = match &j.schedule {
        Some(s) => Some(Schedule::parse(s).map_err(|m| err("schedule", m.to_string()))?),
        None => None,
    };
    let named = match &j.compression {
        Some(c) => Some(
            Compression::from_name(c)
                .ok_or_else(|| err("compression", format!("{c:?} is not gzip, zstd or none")))?,
        ),
        None => None,
    };
    let keep = check_keep(err, j.keep.clone().unwrap_or_default())?;
    let timeout = match &j.timeout {
        Some(t) => Some(parse_duration(t).map_err(|m| err("timeout", m.to_string()))?),
        None => None,
    };
    let jitter = match &j.jitter {
        Some(t) => Some(parse_jitter(t).map_err(|m| err("jitter", m.to_string()))?),
        None => None,
    };
    let Some((kind, keys)) = read.source else {
        return Err(err(
            "kind",
            format!("{:?} is not {}", j.kind, Kind::names_sentence()),
        ));
    };
    if let Some(k) = read.misplaced {
        return Err(err(k, format!("does not apply to kind = \"{}\"", j.kind)));
    }
    let source = keys.into_spec(&PolicyInput::new(&j.name, kind, base, err))?;
    // The kind's own default (mysql: zstd level 1), then the job's level.
    let compression = with_level(
        err,
        source.info().default_compression(named),
        j.compression_level,
    )?;
    let encryption = match &j.encryption {
        Some(e) => {
            Some(validate_encryption(base, e).map_err(|m| err("encryption", m.to_string()))?)
        }
        None => None,
    };
    let incremental = match source.info().incremental_schedule() {
        Some(s) => {
            Some(Schedule::parse(s).map_err(|m| err("incremental", format!("schedule: {m}")))?)
        }
        None => None,
    };
    if incremental.is_some() && schedule.is_none() {
        return Err(err(
            "incremental",
            "incrementals continue full backups: give the job a schedule for them too".into(),
        ));
    }
    let drill = match &j.drill {
        Some(d) => {
            if d.point_in_time.is_some() && !source.info().has_archive() {
                return Err(err(
                    "drill",
                    "point-in-time drills need the job's binlog archive (binlog = { … })".into(),
                ));
            }
            if source.info().drill_starts_own_server() {
                validate_own_server_drill(err, d)?;
            }
            Some(validate_drill(
                base,
                err,
                kind,
                d,
                source.info().drill_starts_own_server(),
            )?)
        }
        None => None,
    };
    Ok(Job {
        name: j.name.clone(),
        schedule,
        incremental,
        compression,
        keep,
        timeout,
        jitter,
        catch_up: j.catch_up,
        source,
        encryption,
        verify_after_backup: j.verify_after_backup,
        drill,
    })
}

/// A job name becomes part of object keys: plain characters, not one of
/// the store's own folders.
fn check_job_name(err: &dyn Fn(&str, String) -> Error, name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || name.starts_with('.')
    {
        return Err(err(
            "name",
            "use letters, digits, '-', '_' and '.' (it becomes part of object keys)".into(),
        ));
    }
    if RESERVED_PREFIXES.contains(&name) {
        return Err(err(
            "name",
            format!("{name:?} is reserved for the store's own objects"),
        ));
    }
    Ok(())
}

/// No count rule of 0 (it keeps nothing), and `within` a duration.
fn check_keep(err: &dyn Fn(&str, String) -> Error, keep: Keep) -> Result<Keep> {
    for (k, v) in [
        ("last", keep.last),
        ("hourly", keep.hourly),
        ("daily", keep.daily),
        ("weekly", keep.weekly),
        ("monthly", keep.monthly),
        ("yearly", keep.yearly),
    ] {
        if v == Some(0) {
            return Err(err(
                "keep",
                format!("{k} = 0 keeps nothing; remove the rule or use a positive count"),
            ));
        }
    }
    if let Some(w) = &keep.within {
        parse_duration(w).map_err(|m| err("keep", format!("within: {m}")))?;
    }
    Ok(keep)
}

/// The job's `compression-level`, in the range of its compression.
fn with_level(
    err: &dyn Fn(&str, String) -> Error,
    compression: Compression,
    level: Option<u32>,
) -> Result<Compression> {
    let Some(level) = level else {
        return Ok(compression);
    };
    match compression {
        Compression::Gzip { .. } if (1..=9).contains(&level) => Ok(Compression::Gzip { level }),
        Compression::Zstd { .. } if (1..=19).contains(&level) => Ok(Compression::Zstd {
            level: level as i32,
        }),
        Compression::None => Err(err(
            "compression-level",
            "no level applies to compression = \"none\"".into(),
        )),
        c => Err(err(
            "compression-level",
            format!(
                "{level} is out of range for {} (gzip 1-9, zstd 1-19)",
                c.name()
            ),
        )),
    }
}

/// A drill of a job whose restore tests start their own scratch server
/// (mysql physical): the keys naming a target server do not apply.
fn validate_own_server_drill(err: &dyn Fn(&str, String) -> Error, d: &RawDrill) -> Result<()> {
    for (key, set) in [
        ("target", d.target.is_some()),
        ("password-env", d.password_env.is_some()),
        ("password-file", d.password_file.is_some()),
        ("allow-source-server", d.allow_source_server.is_some()),
        ("point-in-time", d.point_in_time.is_some()),
    ] {
        if set {
            return Err(err(
                "drill",
                format!("{key} does not apply to drills of method = \"physical\" jobs: they restore into a scratch datadir (scratch = \"DIR\", default the temp folder) and start a scratch mariadbd of their own"),
            ));
        }
    }
    Ok(())
}

fn validate_drill(
    base: &Path,
    err: &dyn Fn(&str, String) -> Error,
    kind: Kind,
    d: &RawDrill,
    own_server: bool,
) -> Result<DrillSpec> {
    let bad = |m: String| err("drill", m);
    let schedule = Schedule::parse(&d.schedule).map_err(|m| bad(format!("schedule: {m}")))?;
    // Each kind names the drill keys it reads (FromPolicy::DRILL_KEYS).
    let only = |key: &str, set: bool| -> Result<()> {
        if set && !kind.drill_keys().contains(&key) {
            let owners: Vec<&str> = Kind::ALL
                .iter()
                .filter(|k| k.drill_keys().contains(&key))
                .map(|k| k.name())
                .collect();
            return Err(bad(format!(
                "{key} applies to {} drills only",
                owners.join(" and ")
            )));
        }
        Ok(())
    };
    only("target", d.target.is_some())?;
    only("password-env", d.password_env.is_some())?;
    only("password-file", d.password_file.is_some())?;
    only("allow-source-server", d.allow_source_server.is_some())?;
    // A physical drill's scratch datadir goes under `scratch`.
    only("scratch", d.scratch.is_some() && !own_server)?;
    only("point-in-time", d.point_in_time.is_some())?;
    let point_in_time = match d.point_in_time.as_deref() {
        None => false,
        Some("newest") => true,
        Some(v) => {
            return Err(bad(format!(
                "point-in-time = {v:?}: the one value is \"newest\" (drill to the newest archived transaction)"
            )))
        }
    };
    if point_in_time && d.password_file.is_some() {
        return Err(bad(
            "point-in-time drills read the scratch password from password-env, not password-file"
                .into(),
        ));
    }
    if let Some(scheme) = kind.drill_target_scheme().filter(|_| !own_server) {
        match &d.target {
            None => {
                return Err(bad(format!(
                    "target = \"{scheme}://user@host:port\" (a scratch server) is required for {kind} drills"
                )))
            }
            Some(t) if !t.starts_with(&format!("{scheme}://")) => {
                return Err(bad(format!("target {t:?} must start with {scheme}://")))
            }
            Some(t)
                if t.split_once("://")
                    .map(|x| x.1.split(['/', '@']).next().unwrap_or("").contains(':')
                        && x.1.contains('@'))
                    .unwrap_or(false) =>
            {
                return Err(bad(
                    "target must not contain a password; use password-env or password-file".into(),
                ))
            }
            _ => {}
        }
    }
    let password = match (&d.password_env, &d.password_file) {
        (Some(_), Some(_)) => {
            return Err(bad("set password-env or password-file, not both".into()))
        }
        (Some(v), None) => Secret::Env(v.clone()),
        (None, Some(f)) => Secret::File(resolve(base, f)),
        (None, None) => Secret::None,
    };
    let timeout = match &d.timeout {
        Some(t) => parse_duration(t).map_err(|m| bad(format!("timeout: {m}")))?,
        None => DEFAULT_DRILL_TIMEOUT,
    };
    Ok(DrillSpec {
        schedule,
        target: d.target.clone(),
        password,
        timeout: Some(timeout),
        scratch: d.scratch.as_ref().map(|p| resolve(base, p)),
        allow_source_server: d.allow_source_server.unwrap_or(false),
        point_in_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy> {
        Policy::parse(Path::new("/etc/cexdr/p.toml"), text)
    }

    const OK: &str = r#"
[store]
kind = "local"
path = "repo"

[[job]]
name = "config"
kind = "files"
paths = ["/etc/nginx"]
schedule = "30 2 * * *"
keep = { within = "30d", last = 3 }
"#;

    #[test]
    fn valid_policy_resolves_relative_paths_against_the_file() {
        let p = parse(OK).unwrap();
        assert_eq!(
            p.store,
            StoreSpec::Local {
                path: "/etc/cexdr/repo".into()
            }
        );
        assert_eq!(p.jobs[0].compression, Compression::Gzip { level: 6 });
        assert_eq!(p.jobs[0].keep.last, Some(3));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = OK.replace("schedule =", "schedul =");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("/etc/cexdr/p.toml:10"), "{e}");
        assert!(e.contains("unknown field `schedul`"), "{e}");
    }

    #[test]
    fn bad_cron_names_line_and_key() {
        let text = OK.replace("30 2 * * *", "61 2 * * *");
        let e = parse(&text).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/etc/cexdr/p.toml:10:"), "{s}");
        assert!(s.contains("`schedule`"), "{s}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn key_of_another_kind_is_rejected() {
        let text = OK.replace(
            "paths = [\"/etc/nginx\"]",
            "paths = [\"/etc\"]\nthreads = 4",
        );
        let s = parse(&text).unwrap_err().to_string();
        assert!(
            s.contains("/etc/cexdr/p.toml:10:") && s.contains("`threads`"),
            "{s}"
        );
    }

    /// A minimal valid job table of each kind (its own required keys).
    fn minimal(kind: Kind) -> &'static str {
        match kind.name() {
            "files" => "paths = [\"/etc\"]\n",
            "mysql" => "url = \"mysql://u@db:3306\"\n",
            "redis" => "url = \"redis://cache:6379\"\n",
            other => panic!("add a minimal {other} job to this test"),
        }
    }

    /// Each kind reads its own keys (FromPolicy::Keys) and refuses, at the
    /// key's line, every key that belongs only to other kinds.
    #[test]
    fn every_kind_rejects_the_keys_of_the_others() {
        let head = "[store]\nkind = \"local\"\npath = \"r\"\n[[job]]\nname = \"j\"\n";
        for kind in Kind::ALL.iter().copied() {
            let job = format!("{head}kind = \"{kind}\"\n{}", minimal(kind));
            parse(&job).unwrap_or_else(|e| panic!("{kind}: {e}"));
            for key in Kind::all_policy_keys() {
                if kind.policy_keys().contains(&key) {
                    continue;
                }
                let text = format!("{job}{key} = 1\n");
                let line = text.lines().count();
                let e = parse(&text).unwrap_err();
                assert_eq!(
                    e.to_string(),
                    format!("/etc/cexdr/p.toml:{line}: job \"j\": key `{key}`: does not apply to kind = \"{kind}\""),
                );
                assert_eq!(e.exit_code(), 2);
            }
        }
    }

    /// Each kind names its drill keys; a drill key of another kind names
    /// the kind it applies to, and mysql drills need a mysql:// target.
    #[test]
    fn drill_keys_belong_to_their_kinds() {
        let head = "[store]\nkind = \"local\"\npath = \"r\"\n[[job]]\nname = \"j\"\n";
        let job = |kind: Kind, drill: &str| {
            format!(
                "{head}kind = \"{kind}\"\n{}drill = {{ schedule = \"0 5 * * 0\"{drill} }}\n",
                minimal(kind)
            )
        };
        let msg = |text: String| parse(&text).unwrap_err().to_string();
        let files = Kind::from_name("files").unwrap();
        let mysql = Kind::from_name("mysql").unwrap();
        assert!(parse(&job(files, ", scratch = \"/tmp\"")).is_ok());
        assert!(msg(job(files, ", target = \"mysql://u@s:3306\""))
            .ends_with("key `drill`: target applies to mysql drills only"));
        assert!(msg(job(
            mysql,
            ", target = \"mysql://u@s:3306\", scratch = \"/tmp\""
        ))
        .ends_with("key `drill`: scratch applies to files drills only"));
        assert!(msg(job(mysql, "")).ends_with(
            "key `drill`: target = \"mysql://user@host:port\" (a scratch server) is required for mysql drills"
        ));
        assert!(msg(job(mysql, ", target = \"redis://s:1\""))
            .ends_with("key `drill`: target \"redis://s:1\" must start with mysql://"));
        assert!(parse(&job(mysql, ", target = \"mysql://u@s:3306\"")).is_ok());
    }

    #[test]
    fn unknown_and_mistyped_source_keys_name_their_line() {
        let text = format!("{OK}thread = 4\n");
        let s = parse(&text).unwrap_err().to_string();
        assert!(
            s.starts_with(
                "/etc/cexdr/p.toml:12: unknown field `thread`, expected one of `name`, `kind`,"
            ),
            "{s}"
        );
        assert!(s.contains("`paths`") && s.contains("`cluster`"), "{s}");
        let mysql = "[store]\nkind = \"local\"\npath = \"r\"\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"mysql://u@db:3306\"\nthreads = \"four\"\n";
        let s = parse(mysql).unwrap_err().to_string();
        assert!(
            s.starts_with("/etc/cexdr/p.toml:8: invalid type: string \"four\""),
            "{s}"
        );
        let binlog = mysql.replace(
            "threads = \"four\"",
            "binlog = { keep = \"2d\", flush = \"5s\" }",
        );
        let s = parse(&binlog).unwrap_err().to_string();
        assert!(
            s.starts_with("/etc/cexdr/p.toml:8: unknown field `flush`"),
            "{s}"
        );
        let range = mysql.replace("threads = \"four\"", "binlog = { flush-interval = \"2h\" }");
        let s = parse(&range).unwrap_err().to_string();
        assert!(
            s.ends_with(
                "p.toml:8: job \"db\": key `binlog`: flush-interval: must be between 1s and 1h"
            ),
            "{s}"
        );
        let p = parse(&mysql.replace("threads = \"four\"", "threads = 4")).unwrap();
        assert_eq!(p.jobs[0].compression, Compression::Zstd { level: 1 });
        for (keys, want) in [
            ("compression = \"gzip\"", Compression::Gzip { level: 3 }),
            (
                "compression = \"gzip\"\ncompression-level = 6",
                Compression::Gzip { level: 6 },
            ),
            ("compression = \"zstd\"", Compression::Zstd { level: 1 }),
            ("compression-level = 5", Compression::Zstd { level: 5 }),
            ("compression = \"none\"", Compression::None),
        ] {
            let p = parse(&mysql.replace("threads = \"four\"", keys)).unwrap();
            assert_eq!(p.jobs[0].compression, want, "{keys}");
        }
        let s = parse(&mysql.replace(
            "threads = \"four\"",
            "compression = \"gzip\"\ncompression-level = 12",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            s.ends_with("12 is out of range for gzip (gzip 1-9, zstd 1-19)"),
            "{s}"
        );
    }

    /// Lines come from the TOML itself: a dotted key in the third job, past
    /// a commented-out header and a header with a comment.
    #[test]
    fn errors_in_dotted_keys_of_a_later_job_name_their_line() {
        let job =
            |n: &str| format!("[[job]]\nname = \"{n}\"\nkind = \"files\"\npaths = [\"/x\"]\n");
        let text = format!(
            "{OK}{}# [[job]] \"off\" was here\n{}[[job]] # the third\nname = \"c\"\nkind = \"files\"\npaths = [\"/x\"]\nkeep.daily = 2\nkeep.last = 0\n",
            job("a"),
            job("b")
        );
        let line = text.lines().position(|l| l == "keep.daily = 2").unwrap() + 1;
        let s = parse(&text).unwrap_err().to_string();
        assert!(
            s.starts_with(&format!(
                "/etc/cexdr/p.toml:{line}: job \"c\": key `keep`: last = 0"
            )),
            "{s}"
        );
        let inline = OK.replace("keep = {", "drill = { schedule = \"x\" }\nkeep = {");
        let line = inline.lines().position(|l| l.starts_with("drill")).unwrap() + 1;
        let s = parse(&inline).unwrap_err().to_string();
        assert!(
            s.starts_with(&format!(
                "/etc/cexdr/p.toml:{line}: job \"config\": key `drill`"
            )),
            "{s}"
        );
    }

    #[test]
    fn password_in_url_is_rejected() {
        let text = "[store]\nkind='local'\npath='r'\n[[job]]\nname='db'\nkind='mysql'\nurl='mysql://root:hunter2@db:3306'\n";
        let s = parse(text).unwrap_err().to_string();
        assert!(s.contains("must not contain a password"), "{s}");
        assert!(!s.contains("hunter2"), "{s}");
    }

    #[test]
    fn duplicate_jobs_and_zero_counts_are_rejected() {
        let dup = format!("{OK}\n[[job]]\nname = \"config\"\nkind = \"files\"\npaths = [\"/x\"]\n");
        assert!(parse(&dup).unwrap_err().to_string().contains("same name"));
        let zero = OK.replace("last = 3", "last = 0");
        assert!(parse(&zero).unwrap_err().to_string().contains("last = 0"));
    }

    #[test]
    fn schedules_accept_five_fields_and_keywords() {
        let s = Schedule::parse("30 2 * * *").unwrap();
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let next: Vec<_> = s.after(t0).take(2).map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            next,
            ["2026-01-01T02:30:00+00:00", "2026-01-02T02:30:00+00:00"]
        );
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("0 30 2 * * *").is_err());
        // Days of the week as cron(5) numbers them: 0 and 7 are Sunday.
        let sunday = |e: &str| {
            Schedule::parse(e)
                .unwrap()
                .after(t0)
                .next()
                .unwrap()
                .to_rfc3339()
        };
        // 2026-01-01 is a Thursday.
        assert_eq!(sunday("0 5 * * 0"), "2026-01-04T05:00:00+00:00");
        assert_eq!(sunday("0 5 * * 7"), "2026-01-04T05:00:00+00:00");
        assert_eq!(sunday("0 5 * * 1-5"), "2026-01-01T05:00:00+00:00");
        assert_eq!(sunday("0 5 * * 1"), "2026-01-05T05:00:00+00:00");
        assert_eq!(sunday("0 5 * * 6,0"), "2026-01-03T05:00:00+00:00");
        assert_eq!(sunday("0 5 * * SUN"), "2026-01-04T05:00:00+00:00");
        assert!(Schedule::parse("0 5 * * 8").is_err());
    }

    #[test]
    fn daemon_table_is_strict_and_validated() {
        let p = parse(OK).unwrap();
        assert_eq!(p.daemon, DaemonSpec::default());
        let text = format!("{OK}\n[daemon]\ntimezone = \"Europe/Berlin\"\nmax-parallel = 2\njitter = \"5m\"\ncatch-up = true\nmetrics-listen = \"\"\n");
        let p = parse(&text).unwrap();
        assert_eq!(p.daemon.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(p.daemon.max_parallel, 2);
        assert_eq!(p.daemon.jitter, Duration::from_secs(300));
        assert!(p.daemon.catch_up);
        assert_eq!(p.daemon.metrics_listen, None);
        let bad = format!("{OK}\n[daemon]\ntimezone = \"Mars/Olympus\"\n");
        let s = parse(&bad).unwrap_err().to_string();
        assert!(
            s.starts_with("/etc/cexdr/p.toml:14:") && s.contains("`timezone`"),
            "{s}"
        );
        let unknown = format!("{OK}\n[daemon]\nmax-paralel = 2\n");
        let s = parse(&unknown).unwrap_err().to_string();
        assert!(s.contains("unknown field `max-paralel`"), "{s}");
        let zero = format!("{OK}\n[daemon]\nmax-parallel = 0\n");
        assert!(parse(&zero)
            .unwrap_err()
            .to_string()
            .contains("`max-parallel`"));
        let job = OK.replace("keep =", "jitter = \"0s\"\ncatch-up = true\nkeep =");
        let p = parse(&job).unwrap();
        assert_eq!(p.jobs[0].jitter, Some(Duration::ZERO));
        assert_eq!(p.jobs[0].catch_up, Some(true));
    }

    #[test]
    fn schedules_read_in_a_time_zone() {
        let s = Schedule::parse("30 2 * * *").unwrap();
        let t0: DateTime<Utc> = "2026-07-01T00:00:00Z".parse().unwrap();
        let next = s.after_in(chrono_tz::Europe::Berlin, t0).next().unwrap();
        // 02:30 in Berlin in summer (UTC+2) is 00:30 UTC.
        assert_eq!(next.to_rfc3339(), "2026-07-01T00:30:00+00:00");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
