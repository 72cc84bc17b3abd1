//! The failover journal: one append-only JSON-lines file per run, one fsync
//! per record. It is the truth: a step is done only when its `step-done`
//! record is on disk, and external ids (a Route 53 change id) are written
//! before anything waits on them, so a resumed run polls instead of re-sending.
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::notify::Delivery;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    Ok,
    /// Failed, but the runbook says `on-failure = "continue"`.
    FailedContinued,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Refused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    RunStarted {
        run: String,
        runbook: String,
        file: PathBuf,
        sha256: String,
        /// `name:kind` of every step, in order.
        plan: Vec<String>,
        by: String,
        force: bool,
        /// The step marked `service-restored = true` (RTO ends there);
        /// absent: the last verify step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_restored: Option<String>,
    },
    RunResumed {
        by: String,
    },
    /// `--force` overrode a safety check; who, and what it overrode.
    Forced {
        step: Option<String>,
        by: String,
        reason: String,
    },
    StepStarted {
        step: String,
        attempt: u32,
    },
    /// Something a step must remember across a crash (change id, previous values).
    StepProgress {
        step: String,
        data: Value,
    },
    StepFailed {
        step: String,
        attempt: u32,
        error: String,
    },
    StepDone {
        step: String,
        outcome: StepOutcome,
        details: Value,
        elapsed_ms: u64,
    },
    Notified {
        /// `start`, `failure`, `end` or `step:NAME`.
        event: String,
        delivery: Delivery,
    },
    RunInterrupted {
        step: Option<String>,
    },
    RunFinished {
        outcome: RunOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_step: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub record: Record,
}

/// `user@host`, for the records that say who did something.
pub fn who() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| format!("uid{}", unsafe { libc::getuid() }));
    format!("{user}@{}", gethostname::gethostname().to_string_lossy())
}

pub fn new_run_id(now: DateTime<Utc>) -> String {
    format!(
        "{}-{:04x}",
        now.format("%Y%m%dT%H%M%S%3fZ"),
        rand::random::<u16>()
    )
}

/// `<state-dir>/<runbook>/`: runs, lock.
pub fn runbook_dir(state_dir: &Path, runbook: &str) -> PathBuf {
    state_dir.join(runbook)
}

fn runs_dir(dir: &Path) -> PathBuf {
    dir.join("runs")
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

pub struct Journal {
    pub path: PathBuf,
    file: File,
    pub entries: Vec<Entry>,
}

impl Journal {
    /// Starts a new run's journal (the file must not exist yet).
    pub fn create(dir: &Path, run: &str) -> Result<Journal> {
        let runs = runs_dir(dir);
        private_dir(&runs).map_err(|e| Error::io(format!("creating {}", runs.display()), e))?;
        let path = runs.join(format!("{run}.jsonl"));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("creating journal {}", path.display()), e))?;
        fsync_dir(&runs)?;
        Ok(Journal {
            path,
            file,
            entries: Vec::new(),
        })
    }

    /// Opens an existing journal for appending, after replaying it. A torn
    /// last line (a crash inside a write) is cut off; any other bad line is
    /// an error naming the file and line.
    pub fn open(path: &Path) -> Result<Journal> {
        let (entries, good_len) = read_entries(path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening journal {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("journal {}", path.display()), e))?
            .len();
        if good_len < len {
            tracing::warn!(journal = %path.display(), "cutting a torn last record");
            file.set_len(good_len)
                .map_err(|e| Error::io(format!("journal {}", path.display()), e))?;
        }
        file.seek(SeekFrom::End(0))
            .map_err(|e| Error::io(format!("journal {}", path.display()), e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }

    /// Appends one record and fsyncs it before returning.
    pub fn append(&mut self, record: Record) -> Result<&Entry> {
        let entry = Entry {
            seq: self.entries.last().map(|e| e.seq + 1).unwrap_or(1),
            at: Utc::now(),
            record,
        };
        let mut line = serde_json::to_vec(&entry).expect("serialisable");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| Error::io(format!("writing journal {}", self.path.display()), e))?;
        self.entries.push(entry);
        Ok(self.entries.last().expect("just pushed"))
    }

    pub fn replay(&self) -> Replay {
        Replay::from_entries(&self.entries)
    }
}

/// Reads every record; returns them and the length of the well-formed prefix.
pub fn read_entries(path: &Path) -> Result<(Vec<Entry>, u64)> {
    let f = File::open(path)
        .map_err(|e| Error::io(format!("opening journal {}", path.display()), e))?;
    let mut r = BufReader::new(f);
    let mut entries = Vec::new();
    let mut good = 0u64;
    let mut line = Vec::new();
    let mut n = 0usize;
    loop {
        line.clear();
        let read = r
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(format!("reading journal {}", path.display()), e))?;
        if read == 0 {
            break;
        }
        n += 1;
        let complete = line.ends_with(b"\n");
        match serde_json::from_slice::<Entry>(&line) {
            Ok(e) if complete => {
                entries.push(e);
                good += read as u64;
            }
            // A crash mid-write can leave a partial last line: ignore it.
            _ if !complete => break,
            Ok(_) => unreachable!(),
            Err(err) => {
                return Err(Error::Failover {
                    what: format!("journal {}:{n}", path.display()),
                    msg: format!("corrupt record ({err}); the journal is append-only JSON lines, fix or move it aside"),
                })
            }
        }
    }
    if entries.is_empty() {
        return Err(Error::Failover {
            what: format!("journal {}", path.display()),
            msg: "empty: no run-started record".into(),
        });
    }
    if !matches!(entries[0].record, Record::RunStarted { .. }) {
        return Err(Error::Failover {
            what: format!("journal {}:1", path.display()),
            msg: "the first record is not run-started".into(),
        });
    }
    Ok((entries, good))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Pending,
    /// Started, not done: a resume re-enters it.
    Interrupted,
    Failed,
    Done,
    FailedContinued,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepState {
    pub name: String,
    pub status: StepStatus,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub elapsed_ms: Option<u64>,
    pub last_error: Option<String>,
    pub details: Option<Value>,
    #[serde(skip)]
    pub progress: Vec<Value>,
}

/// The step a record is about, for the records that are about one.
fn step_of(record: &Record) -> Option<&str> {
    match record {
        Record::StepStarted { step, .. }
        | Record::StepProgress { step, .. }
        | Record::StepFailed { step, .. }
        | Record::StepDone { step, .. } => Some(step),
        _ => None,
    }
}

impl StepState {
    /// A step of the plan (`name:kind`) before any record about it.
    fn pending(plan_entry: &str) -> StepState {
        StepState {
            name: plan_entry
                .rsplit_once(':')
                .map(|(n, _)| n)
                .unwrap_or(plan_entry)
                .to_owned(),
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            elapsed_ms: None,
            last_error: None,
            details: None,
            progress: Vec::new(),
        }
    }

    /// A record about this step.
    fn apply(&mut self, e: &Entry) {
        let s = self;
        match &e.record {
            Record::StepStarted { attempt, .. } => {
                if s.started_at.is_none() {
                    s.started_at = Some(e.at);
                }
                s.attempts = s.attempts.max(*attempt);
                if !matches!(s.status, StepStatus::Done | StepStatus::FailedContinued) {
                    s.status = StepStatus::Interrupted;
                }
            }
            Record::StepProgress { data, .. } => s.progress.push(data.clone()),
            Record::StepFailed { error, .. } => {
                s.last_error = Some(error.clone());
                s.status = StepStatus::Failed;
            }
            Record::StepDone {
                outcome,
                details,
                elapsed_ms,
                ..
            } => {
                s.status = match outcome {
                    StepOutcome::Ok => StepStatus::Done,
                    StepOutcome::FailedContinued => StepStatus::FailedContinued,
                };
                s.details = Some(details.clone());
                s.elapsed_ms = Some(*elapsed_ms);
                s.finished_at = Some(e.at);
            }
            _ => {}
        }
    }
}

/// What a journal says, rebuilt from its records (pure; golden-tested).
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub run: String,
    pub runbook: String,
    pub sha256: String,
    pub plan: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub started_by: String,
    /// Where the RTO ends (None: the last verify step).
    pub service_restored: Option<String>,
    pub forced: Vec<String>,
    pub resumed: u32,
    pub steps: Vec<StepState>,
    #[serde(skip)]
    pub notified: BTreeSet<(String, String)>,
    pub notifications: Vec<(String, Delivery)>,
    pub outcome: Option<RunOutcome>,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    pub interrupted: bool,
}

impl Replay {
    /// Replays the records in order: the run's header, then each record
    /// into the run or into its step.
    pub fn from_entries(entries: &[Entry]) -> Replay {
        let mut r = Replay::started(&entries[0]);
        for e in &entries[1..] {
            match step_of(&e.record) {
                Some(step) => {
                    if let Some(s) = r.steps.iter_mut().find(|s| s.name == step) {
                        s.apply(e);
                    }
                }
                None => r.apply(e),
            }
        }
        r
    }

    /// The run as its `run-started` record plans it: every step pending.
    fn started(first: &Entry) -> Replay {
        let Record::RunStarted {
            run,
            runbook,
            sha256,
            plan,
            by,
            service_restored,
            ..
        } = &first.record
        else {
            panic!("read_entries checks the first record")
        };
        Replay {
            run: run.clone(),
            runbook: runbook.clone(),
            sha256: sha256.clone(),
            plan: plan.clone(),
            started_at: first.at,
            started_by: by.clone(),
            service_restored: service_restored.clone(),
            forced: Vec::new(),
            resumed: 0,
            steps: plan.iter().map(|p| StepState::pending(p)).collect(),
            notified: BTreeSet::new(),
            notifications: Vec::new(),
            outcome: None,
            failed_step: None,
            error: None,
            finished_at: None,
            interrupted: false,
        }
    }

    /// A record about the run as a whole.
    fn apply(&mut self, e: &Entry) {
        let r = self;
        match &e.record {
            Record::RunResumed { .. } => {
                r.resumed += 1;
                r.interrupted = false;
                r.outcome = None;
                r.finished_at = None;
            }
            Record::Forced { step, by, reason } => r.forced.push(format!(
                "{} by {by} at {}: {reason}",
                step.as_deref().unwrap_or("run"),
                e.at.to_rfc3339()
            )),
            Record::Notified { event, delivery } => {
                r.notified.insert((event.clone(), delivery.channel.clone()));
                r.notifications.push((event.clone(), delivery.clone()));
            }
            Record::RunInterrupted { .. } => r.interrupted = true,
            Record::RunFinished {
                outcome,
                failed_step,
                error,
            } => {
                r.outcome = Some(*outcome);
                r.failed_step = failed_step.clone();
                r.error = error.clone();
                r.finished_at = Some(e.at);
            }
            Record::RunStarted { .. }
            | Record::StepStarted { .. }
            | Record::StepProgress { .. }
            | Record::StepFailed { .. }
            | Record::StepDone { .. } => {}
        }
    }

    pub fn step(&self, name: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Run start → the step marked `service-restored` done, or (unmarked)
    /// the last `verify` step done (the backup site served).
    pub fn rto(&self) -> Option<chrono::Duration> {
        if let Some(name) = &self.service_restored {
            let s = self.step(name)?;
            return match s.status {
                StepStatus::Done => Some(s.finished_at? - self.started_at),
                _ => None,
            };
        }
        let verify_done = self
            .steps
            .iter()
            .zip(&self.plan)
            .filter(|(s, p)| p.ends_with(":verify") && s.status == StepStatus::Done)
            .filter_map(|(s, _)| s.finished_at)
            .max()?;
        Some(verify_done - self.started_at)
    }

    /// What the promoted database lacks of the old primary, with the
    /// evidence (from the done `promote-mysql` steps' details).
    pub fn rpo(&self) -> Option<Value> {
        let (s, _) = self
            .steps
            .iter()
            .zip(&self.plan)
            .rfind(|(s, p)| p.ends_with(":promote-mysql") && s.status == StepStatus::Done)?;
        let d = s.details.as_ref()?;
        let loss = &d["data-loss"];
        Some(serde_json::json!({
            "step": s.name,
            "transactions": loss["transactions"],
            "seconds": loss["seconds"],
            "seconds-unknown": loss["seconds-unknown"],
            "evidence": {
                "old-primary-position": loss["old-primary-position"],
                "source": loss["source"],
                "old-newest-commit": loss["old-newest-commit"],
                "promoted-newest-commit": loss["promoted-newest-commit"],
                "promoted-position": loss["promoted-position"],
                "replica-received": d["received"],
                "replica-applied": d["applied"],
                "archive-top-up": d["archive-top-up"],
                "promoted-at": d["gtid-binlog-pos"],
                "accepted-data-loss": d["accepted-data-loss"],
            },
        }))
    }

    pub fn is_finished_ok(&self) -> bool {
        self.outcome == Some(RunOutcome::Succeeded)
    }
}

/// Journals of a runbook's runs, oldest first (run ids sort by time).
pub fn list_runs(dir: &Path) -> Result<Vec<PathBuf>> {
    let runs = runs_dir(dir);
    let rd = match std::fs::read_dir(&runs) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", runs.display()), e)),
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map(|x| x == "jsonl").unwrap_or(false))
        .collect();
    out.sort();
    Ok(out)
}

pub fn run_path(dir: &Path, run: &str) -> PathBuf {
    runs_dir(dir).join(format!("{run}.jsonl"))
}

/// One failover per runbook at a time: an exclusive `flock` on
/// `<state>/<runbook>/lock`, released by the kernel even after `kill -9`.
pub struct Lock {
    _file: File,
}

/// State folders are private (0700): journals name hosts, zones and replicas.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Lock {
    pub fn acquire(dir: &Path, runbook: &str) -> Result<Lock> {
        private_dir(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening lock {}", path.display()), e))?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let mut parts = holder.trim().splitn(2, ' ');
            let who = parts.next().unwrap_or("another process").to_owned();
            let since = parts.next().unwrap_or("unknown").to_owned();
            return Err(Error::RunbookLocked {
                runbook: runbook.to_owned(),
                holder: if who.is_empty() {
                    "another process".into()
                } else {
                    who
                },
                since,
            });
        }
        let _ = file.set_len(0);
        let _ = writeln!(
            file,
            "pid{}:{} {}",
            std::process::id(),
            who(),
            Utc::now().to_rfc3339()
        );
        Ok(Lock { _file: file })
    }
}
