//! The failover engine: plan → safety checks → steps, each journaled
//! (`step-started`, progress, `step-done`) so that `--resume` skips what is
//! done and re-enters what was interrupted.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::base::human_duration;
use crate::error::{one_line, Error, Result};
use crate::failover::journal::{
    self, Journal, Lock, Record, Replay, RunOutcome, StepOutcome, StepStatus,
};
use crate::failover::runbook::Event;
use crate::failover::runbook::{OnFailure, Runbook};
use crate::failover::step::{self, Ctx, PreviewCtx, RunInfo};
use crate::notify::{deliver, Message, Severity};

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub yes: bool,
    pub dry_run: bool,
    pub force: bool,
    /// `Some(None)`: resume the latest unfinished run; `Some(Some(id))`: that run.
    pub resume: Option<Option<String>>,
    /// Overrides the runbook's `state-dir`.
    pub state_dir: Option<PathBuf>,
    /// Promote past a step's `max-data-loss` (journaled as forced).
    pub accept_data_loss: bool,
    /// Access to the PITR binlog archive for `promote-mysql`'s top-up (the
    /// CLI builds it on `backup`; None: a step naming an archive fails).
    pub archives: Option<crate::failover::archive::Archives>,
}

/// How the engine talks to the operator. The engine prints nothing and reads
/// nothing: the CLI implements this for a terminal (and `--json`).
pub trait Ui: Send + Sync {
    /// One progress line: the plan, a step starting or done, a retry.
    fn progress(&self, line: &str);
    /// The plan was shown; `Ok(true)` means fail over now. Called only
    /// without `--yes`.
    fn confirm(&self, runbook: &str) -> Result<bool>;
}

/// What the steps may know of the runbook and the command line.
fn run_info(rb: &Runbook, opts: &Options) -> RunInfo {
    RunInfo {
        runbook: rb.name.clone(),
        from_site: rb.from_site.clone(),
        to_site: rb.to_site.clone(),
        channels: rb.channels.clone(),
        force: opts.force,
        accept_data_loss: opts.accept_data_loss,
        archives: opts.archives.clone(),
    }
}

pub fn load(file: &Path, state_dir: Option<&Path>) -> Result<Runbook> {
    let mut rb = Runbook::load(file)?;
    if let Some(d) = state_dir {
        rb.state_dir = d.to_path_buf();
    }
    Ok(rb)
}

/// Secrets are read before anything talks to a server: a missing variable
/// stops the run before it starts, not half-way.
fn preflight(rb: &Runbook) -> Result<()> {
    for c in &rb.channels {
        c.check_secrets()
            .map_err(|e| Error::Usage(format!("channel {}: {}", c.name(), one_line(&e))))?;
    }
    for s in &rb.steps {
        s.kind
            .check_secrets()
            .map_err(|e| Error::Usage(format!("step {}: {}", s.name, one_line(&e))))?;
    }
    Ok(())
}

/// `cexdr failover --runbook FILE [--dry-run]`.
pub async fn failover(
    rb: &Runbook,
    opts: &Options,
    ui: &dyn Ui,
    cancel: CancellationToken,
) -> Result<Value> {
    preflight(rb)?;
    let dir = journal::runbook_dir(&rb.state_dir, &rb.name);
    if opts.dry_run {
        return dry_run(rb, opts, ui).await;
    }
    let _lock = Lock::acquire(&dir, &rb.name)?;
    let mut resumed_note = None;
    let mut j = match &opts.resume {
        Some(run) => {
            let (j, note) = open_for_resume(rb, &dir, run.as_deref())?;
            ui.progress(&note);
            resumed_note = Some(note);
            j
        }
        None => {
            safety_checks(rb, &dir, opts, Utc::now())?;
            ui.progress(&rb.describe());
            if !opts.yes && !ui.confirm(&rb.name)? {
                return Err(Error::Usage("not confirmed; nothing was changed".into()));
            }
            let run = journal::new_run_id(Utc::now());
            let mut j = Journal::create(&dir, &run)?;
            j.append(Record::RunStarted {
                run,
                runbook: rb.name.clone(),
                file: rb.file.clone(),
                sha256: rb.sha256.clone(),
                plan: rb.plan_fingerprint(),
                by: journal::who(),
                force: opts.force,
                service_restored: rb
                    .steps
                    .iter()
                    .find(|s| s.service_restored)
                    .map(|s| s.name.clone()),
            })?;
            j
        }
    };
    let outcome = run_steps(rb, &mut j, opts, ui, resumed_note, cancel).await;
    let replay = j.replay();
    ui.progress(&format!("journal: {}", j.path.display()));
    let doc = status_json(&replay);
    outcome.map(|_| doc)
}

/// Opens a run to resume; also says where it stopped (for the operator and
/// the run's next message: a killed run could tell nobody).
fn open_for_resume(rb: &Runbook, dir: &Path, run: Option<&str>) -> Result<(Journal, String)> {
    let path = match run {
        Some(r) => {
            let p = journal::run_path(dir, r);
            if !p.exists() {
                return Err(Error::Usage(format!(
                    "no run {r} of runbook {} in {}",
                    rb.name,
                    dir.display()
                )));
            }
            p
        }
        None => {
            let mut found = None;
            for p in journal::list_runs(dir)?.into_iter().rev() {
                let (entries, _) = journal::read_entries(&p)?;
                if !Replay::from_entries(&entries).is_finished_ok() {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or_else(|| {
                Error::Usage(format!(
                    "runbook {} has no unfinished run to resume",
                    rb.name
                ))
            })?
        }
    };
    let mut j = Journal::open(&path)?;
    let r = j.replay();
    if r.runbook != rb.name {
        return Err(Error::Failover {
            what: format!("journal {}", path.display()),
            msg: format!("it is a run of runbook {:?}, not {:?}", r.runbook, rb.name),
        });
    }
    if r.plan != rb.plan_fingerprint() {
        return Err(Error::Failover {
            what: format!("journal {}", path.display()),
            msg: format!(
                "the runbook's steps changed since run {} started (journal: {}; runbook now: {}); finish it with the old runbook or start a new run",
                r.run,
                r.plan.join(", "),
                rb.plan_fingerprint().join(", ")
            ),
        });
    }
    if r.sha256 != rb.sha256 {
        tracing::warn!(run = %r.run, "the runbook file changed since the run started (same steps); resuming with the new parameters");
    }
    if r.is_finished_ok() {
        return Err(Error::Usage(format!(
            "run {} already succeeded; nothing to resume",
            r.run
        )));
    }
    let note = where_it_stopped(&r);
    j.append(Record::RunResumed { by: journal::who() })?;
    Ok((j, note))
}

/// "run R was killed in step S (attempt N)" and the like, from the journal.
fn where_it_stopped(r: &Replay) -> String {
    let last_at = r.steps.iter().filter_map(|s| s.started_at).max();
    let how = match r.steps.iter().find(|s| {
        matches!(
            s.status,
            StepStatus::Interrupted | StepStatus::Failed | StepStatus::Pending
        )
    }) {
        Some(s) if s.status == StepStatus::Failed => format!(
            "failed in step {} after {} attempt(s): {}",
            s.name,
            s.attempts,
            s.last_error.as_deref().unwrap_or("?")
        ),
        Some(s) if s.status == StepStatus::Interrupted => format!(
            "was interrupted (killed, or the host went down) in step {} (attempt {})",
            s.name, s.attempts
        ),
        Some(s) if r.interrupted => {
            format!("was stopped (SIGTERM / Ctrl-C) before step {}", s.name)
        }
        Some(s) => format!("was interrupted before step {}", s.name),
        None => "was interrupted after its last step".to_owned(),
    };
    format!(
        "run {} {how}{}; resumed by {}",
        r.run,
        last_at
            .map(|t| format!(" (last step started {})", t.to_rfc3339()))
            .unwrap_or_default(),
        journal::who()
    )
}

/// Refuses a new run while another is unfinished, or within the cool-down
/// after a completed failover, unless `--force` (journaled by the caller).
fn safety_checks(
    rb: &Runbook,
    dir: &Path,
    opts: &Options,
    now: chrono::DateTime<Utc>,
) -> Result<()> {
    let runs = journal::list_runs(dir)?;
    for p in runs.iter().rev() {
        let r = match journal::read_entries(p) {
            Ok((entries, _)) => Replay::from_entries(&entries),
            Err(e) if opts.force => {
                tracing::warn!(error = %one_line(&e), "ignoring an unreadable journal because of --force");
                continue;
            }
            Err(e) => return Err(e),
        };
        match r.outcome {
            None if !opts.force => {
                return Err(Error::Failover {
                    what: format!("runbook {}", rb.name),
                    msg: format!(
                        "run {} is unfinished: `cexdr failover --runbook {} --resume {}` continues it (--force starts a new run instead)",
                        r.run,
                        rb.file.display(),
                        r.run
                    ),
                })
            }
            Some(RunOutcome::Succeeded) => {
                let at = r.finished_at.expect("finished");
                let until = at + chrono::Duration::from_std(rb.cool_down).unwrap_or_default();
                if now < until && !opts.force {
                    return Err(Error::Failover {
                        what: format!("runbook {}", rb.name),
                        msg: format!(
                            "run {} completed a failover at {}; within the cool-down ({}, until {}) a new failover needs --force",
                            r.run,
                            at.to_rfc3339(),
                            human_duration(rb.cool_down),
                            until.to_rfc3339()
                        ),
                    });
                }
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

async fn dry_run(rb: &Runbook, opts: &Options, ui: &dyn Ui) -> Result<Value> {
    ui.progress(&rb.describe());
    ui.progress("dry run: read-only checks, nothing is changed");
    let info = run_info(rb, opts);
    let mut steps = Vec::new();
    for s in &rb.steps {
        let started = Instant::now();
        let ctx = PreviewCtx {
            step: &s.name,
            info: &info,
        };
        let v = match tokio::time::timeout(s.timeout, s.kind.step().preview(&ctx)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => json!({ "error": one_line(&e) }),
            Err(_) => json!({ "error": format!("no answer within {}", human_duration(s.timeout)) }),
        };
        ui.progress(&format!(
            "- {} [{}] ({}): {}",
            s.name,
            s.kind_name(),
            human_duration(started.elapsed()),
            serde_json::to_string(&v).expect("json")
        ));
        steps.push(json!({ "step": s.name, "kind": s.kind_name(), "preview": v }));
    }
    Ok(json!({ "runbook": rb.name, "dry_run": true, "steps": steps }))
}

fn run_id(j: &Journal) -> String {
    j.replay().run
}

fn summary(r: &Replay) -> String {
    let mut s = String::new();
    for (i, st) in r.steps.iter().enumerate() {
        s.push_str(&format!(
            "{}. {} {}{}\n",
            i + 1,
            st.name,
            status_word(st.status),
            st.elapsed_ms
                .map(|ms| format!(" ({})", human_duration(Duration::from_millis(ms))))
                .unwrap_or_default()
        ));
    }
    if let Some(rto) = r.rto() {
        s.push_str(&format!("{}: {}\n", rto_label(r), fmt_chrono(rto)));
    }
    if let Some(rpo) = r.rpo() {
        s.push_str(&rpo_line(&rpo));
    }
    s
}

fn rto_label(r: &Replay) -> String {
    match &r.service_restored {
        Some(step) => format!("RTO (start → {step} done)"),
        None => "RTO (start → verify green)".into(),
    }
}

fn rpo_line(rpo: &Value) -> String {
    let e = &rpo["evidence"];
    let top = match &e["archive-top-up"] {
        Value::Object(t) => format!(
            "; {} transaction(s) topped up from the archive",
            t.get("transactions").and_then(|n| n.as_u64()).unwrap_or(0)
        ),
        _ => String::new(),
    };
    match rpo["transactions"].as_u64() {
        Some(n) => format!(
            "RPO: {n} transaction(s) lacking, {} (old primary at {}, source: {}; replica applied {}{top}, promoted at {})\n",
            match rpo["seconds"].as_u64() {
                Some(s) => format!(
                    "{s} s of commits{}",
                    match (e["old-newest-commit"].as_str(), e["promoted-newest-commit"].as_str()) {
                        (Some(a), Some(b)) => format!(" ({b} → {a})"),
                        _ => String::new(),
                    }
                ),
                None => format!(
                    "time span unknown: {}",
                    rpo["seconds-unknown"].as_str().unwrap_or("no commit times")
                ),
            },
            e["old-primary-position"].as_str().unwrap_or("?"),
            e["source"].as_str().unwrap_or("?"),
            e["replica-applied"].as_str().unwrap_or("?"),
            e["promoted-at"].as_str().unwrap_or("?")
        ),
        None => format!(
            "RPO: unknown ({}); replica received {}, applied {}{top}, promoted at {}\n",
            e["source"].as_str().unwrap_or("?"),
            e["replica-received"].as_str().unwrap_or("?"),
            e["replica-applied"].as_str().unwrap_or("?"),
            e["promoted-at"].as_str().unwrap_or("?")
        ),
    }
}

fn fmt_chrono(d: chrono::Duration) -> String {
    human_duration(d.to_std().unwrap_or_default())
}

async fn notify_event(rb: &Runbook, j: &mut Journal, event: Event, text: String) -> Result<()> {
    if !rb.notify_on.contains(&event) {
        return Ok(());
    }
    let r = j.replay();
    // One interruption message per stop: a resumed run may be stopped again.
    let key = match event {
        Event::Interrupted => format!("{}.{}", event.name(), r.resumed),
        _ => event.name().to_owned(),
    };
    let id = format!("{}.{key}", r.run);
    let msg = Message {
        id: id.clone(),
        subject: format!(
            "[cexdr] failover {} {}: {} → {}",
            rb.name,
            match event {
                Event::Start => "started",
                Event::Failure => "FAILED",
                Event::End => "finished",
                Event::Refused => "refused (the primary answers)",
                Event::Interrupted => "interrupted",
            },
            rb.from_site,
            rb.to_site
        ),
        // The run id and the idempotency key in the text as well: a chat
        // message resent after a crash must be recognisable as the same one.
        text: format!("{text}\n(run {}, message {id})", r.run),
        severity: match event {
            Event::Start | Event::Interrupted => Severity::Warning,
            Event::Failure => Severity::Critical,
            Event::End => Severity::Info,
            // A refusal is the safety check working: good news, not a page.
            Event::Refused => rb.refusal_severity,
        },
        fields: BTreeMap::from([
            ("run".to_owned(), r.run.clone()),
            ("by".to_owned(), r.started_by.clone()),
        ]),
    };
    for name in &rb.notify {
        if r.notified.contains(&(key.clone(), name.clone())) {
            continue;
        }
        let ch = rb.channel(name).expect("validated channel name");
        let d = deliver(ch, &msg).await;
        j.append(Record::Notified {
            event: key.clone(),
            delivery: d,
        })?;
    }
    Ok(())
}

/// What every phase of a run reads: the runbook, the operator, and the
/// run's id, what the steps may know, its stop signal and its pending note.
struct RunScope<'a> {
    rb: &'a Runbook,
    ui: &'a dyn Ui,
    run: String,
    info: RunInfo,
    /// Said in the run's next message (end or failure): nobody heard of the stop.
    note: String,
    cancel: CancellationToken,
}

/// How a step is entered, as the journal has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Done (or failed and continued) in an earlier run: skipped.
    Skip,
    /// Started and not finished: entered again, with its progress.
    Reenter,
    /// Not started yet.
    Start,
}

/// How a step ended, as the run goes on from it.
enum StepEnd {
    Done(Value),
    /// Failed with `on-failure = continue`.
    Continued(Error),
    /// The run stops here.
    Stopped(Stop, Error),
}

/// Why a run stops at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The primary answered: nothing was changed.
    Refused,
    /// The step failed: fix the cause and resume.
    Failed,
}

impl Stop {
    fn word(self) -> &'static str {
        match self {
            Stop::Refused => "REFUSED",
            Stop::Failed => "FAILED",
        }
    }

    fn event(self) -> Event {
        match self {
            Stop::Refused => Event::Refused,
            Stop::Failed => Event::Failure,
        }
    }

    fn outcome(self) -> RunOutcome {
        match self {
            Stop::Refused => RunOutcome::Refused,
            Stop::Failed => RunOutcome::Failed,
        }
    }
}

/// The run proper: start, each step (plan → execute → check → record),
/// end. Every phase journals before it goes on.
async fn run_steps(
    rb: &Runbook,
    j: &mut Journal,
    opts: &Options,
    ui: &dyn Ui,
    resumed_note: Option<String>,
    cancel: CancellationToken,
) -> Result<()> {
    let scope = RunScope {
        rb,
        ui,
        run: run_id(j),
        info: run_info(rb, opts),
        note: resumed_note
            .map(|n| format!("Note: {n}.\n"))
            .unwrap_or_default(),
        cancel,
    };
    announce_start(&scope, j, opts).await?;
    let total = rb.steps.len();
    for (i, spec) in rb.steps.iter().enumerate() {
        let state = j
            .replay()
            .step(&spec.name)
            .cloned()
            .expect("plan matches the journal");
        let label = format!("[{}/{total}] {}", i + 1, spec.name);
        let entry = plan_step(&state);
        if entry == Entry::Skip {
            ui.progress(&format!("{label}: already done, skipped"));
            continue;
        }
        if scope.cancel.is_cancelled() {
            return stop_interrupted(&scope, j, spec).await;
        }
        if entry == Entry::Reenter {
            ui.progress(&format!("{label}: re-entering an interrupted step"));
        } else {
            ui.progress(&format!("{label} ({})…", spec.kind_name()));
        }
        let started = Instant::now();
        let result = execute_step(&scope, j, spec, &state).await?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        record_step(&scope, j, spec, check_step(spec, result), elapsed_ms).await?;
    }
    finish_run(&scope, j).await
}

/// A forced run says so first; then the start message with the plan.
async fn announce_start(scope: &RunScope<'_>, j: &mut Journal, opts: &Options) -> Result<()> {
    let rb = scope.rb;
    if opts.force && opts.resume.is_none() {
        j.append(Record::Forced {
            step: None,
            by: journal::who(),
            reason: "--force: cool-down and unfinished-run checks overridden".into(),
        })?;
    }
    notify_event(
        rb,
        j,
        Event::Start,
        format!(
            "Failover from {} to {} started by {} (run {}).\nPlan:\n{}",
            rb.from_site,
            rb.to_site,
            journal::who(),
            scope.run,
            rb.plan_fingerprint().join("\n")
        ),
    )
    .await
}

fn plan_step(state: &journal::StepState) -> Entry {
    match state.status {
        StepStatus::Done | StepStatus::FailedContinued => Entry::Skip,
        StepStatus::Interrupted => Entry::Reenter,
        StepStatus::Pending | StepStatus::Failed => Entry::Start,
    }
}

/// Stopped between steps (SIGTERM / Ctrl-C): journaled, said, and
/// `Error::Interrupted`.
async fn stop_interrupted(
    scope: &RunScope<'_>,
    j: &mut Journal,
    spec: &crate::failover::runbook::StepSpec,
) -> Result<()> {
    let run = &scope.run;
    j.append(Record::RunInterrupted {
        step: Some(spec.name.clone()),
    })?;
    let msg = format!(
        "interrupted before step {}; `cexdr failover --runbook {} --resume {run}` continues",
        spec.name,
        scope.rb.file.display()
    );
    scope.ui.progress(&msg);
    notify_event(
        scope.rb,
        j,
        Event::Interrupted,
        format!(
            "Failover run {run} was stopped (SIGTERM / Ctrl-C) before step {}.\n{}Resume: {msg}",
            spec.name,
            summary(&j.replay())
        ),
    )
    .await?;
    Err(Error::Interrupted)
}

/// Runs a step's attempts (each journaled, each under the step's timeout)
/// until one succeeds, the retries are spent, the error is permanent or
/// the run is stopped. The outer error is the journal's.
async fn execute_step(
    scope: &RunScope<'_>,
    j: &mut Journal,
    spec: &crate::failover::runbook::StepSpec,
    state: &journal::StepState,
) -> Result<std::result::Result<Value, Error>> {
    let step = spec.kind.step();
    let mut progress = state.progress.clone();
    let mut attempt = state.attempts;
    let mut tries = 0;
    loop {
        attempt += 1;
        tries += 1;
        j.append(Record::StepStarted {
            step: spec.name.clone(),
            attempt,
        })?;
        let deadline = crate::base::duration::deadline(tokio::time::Instant::now(), spec.timeout);
        let mut ctx = Ctx {
            run: &scope.run,
            step: &spec.name,
            info: &scope.info,
            deadline,
            cancel: scope.cancel.clone(),
            progress: std::mem::take(&mut progress),
            journal: j,
        };
        let res = tokio::time::timeout(spec.timeout, step.run(&mut ctx)).await;
        progress = std::mem::take(&mut ctx.progress);
        let err = match res {
            Ok(Ok(details)) => return Ok(Ok(details)),
            Ok(Err(e)) => e,
            Err(_) => step::step_error(
                &spec.name,
                format!("timed out after {}", human_duration(spec.timeout)),
            ),
        };
        j.append(Record::StepFailed {
            step: spec.name.clone(),
            attempt,
            error: one_line(&err),
        })?;
        // A permanent error (404, 401, a selector matching nothing) stays one.
        if tries > spec.retries || scope.cancel.is_cancelled() || err.is_permanent() {
            return Ok(Err(err));
        }
        // At most 64 × backoff, as before.
        let wait =
            crate::base::duration::backoff(spec.backoff, tries, spec.backoff.saturating_mul(64));
        scope.ui.progress(&format!(
            "    attempt {attempt} failed: {}; retrying in {}",
            one_line(&err),
            human_duration(wait)
        ));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = scope.cancel.cancelled() => return Ok(Err(err)),
        }
    }
}

/// What a step's result means for the run.
fn check_step(
    spec: &crate::failover::runbook::StepSpec,
    result: std::result::Result<Value, Error>,
) -> StepEnd {
    match result {
        Ok(details) => StepEnd::Done(details),
        Err(e) if spec.on_failure == OnFailure::Continue && !matches!(e, Error::Interrupted) => {
            StepEnd::Continued(e)
        }
        Err(e @ Error::PrimaryAlive { .. }) => StepEnd::Stopped(Stop::Refused, e),
        Err(e) => StepEnd::Stopped(Stop::Failed, e),
    }
}

/// Journals how the step ended; a stop is also said, journaled as the
/// run's end, and returned.
async fn record_step(
    scope: &RunScope<'_>,
    j: &mut Journal,
    spec: &crate::failover::runbook::StepSpec,
    end: StepEnd,
    elapsed_ms: u64,
) -> Result<()> {
    let ui = scope.ui;
    match end {
        StepEnd::Done(details) => {
            j.append(Record::StepDone {
                step: spec.name.clone(),
                outcome: StepOutcome::Ok,
                details,
                elapsed_ms,
            })?;
            ui.progress(&format!(
                "    done in {}",
                human_duration(Duration::from_millis(elapsed_ms))
            ));
            Ok(())
        }
        StepEnd::Continued(e) => {
            ui.progress(&format!(
                "    FAILED (on-failure = continue): {}",
                one_line(&e)
            ));
            j.append(Record::StepDone {
                step: spec.name.clone(),
                outcome: StepOutcome::FailedContinued,
                details: json!({ "error": one_line(&e) }),
                elapsed_ms,
            })?;
            Ok(())
        }
        StepEnd::Stopped(stop, e) => {
            ui.progress(&format!("    {}: {}", stop.word(), one_line(&e)));
            let (run, note) = (&scope.run, &scope.note);
            let text = match stop {
                Stop::Refused => format!(
                    "{note}Failover run {run} refused at step {}: nothing was changed.\n{}",
                    spec.name,
                    one_line(&e)
                ),
                Stop::Failed => format!(
                    "{note}Failover run {run} stopped at step {}: {}\n{}\nFix the cause, then: cexdr failover --runbook {} --resume {run}",
                    spec.name,
                    one_line(&e),
                    summary(&j.replay()),
                    scope.rb.file.display()
                ),
            };
            notify_event(scope.rb, j, stop.event(), text).await?;
            j.append(Record::RunFinished {
                outcome: stop.outcome(),
                failed_step: Some(spec.name.clone()),
                error: Some(one_line(&e)),
            })?;
            Err(e)
        }
    }
}

/// Every step done: the end message, then the run's end in the journal.
async fn finish_run(scope: &RunScope<'_>, j: &mut Journal) -> Result<()> {
    let rb = scope.rb;
    let (run, note) = (&scope.run, &scope.note);
    let r = j.replay();
    notify_event(
        rb,
        j,
        Event::End,
        format!(
            "{note}Failover run {run} from {} to {} completed.\n{}",
            rb.from_site,
            rb.to_site,
            summary(&r)
        ),
    )
    .await?;
    j.append(Record::RunFinished {
        outcome: RunOutcome::Succeeded,
        failed_step: None,
        error: None,
    })?;
    let r = j.replay();
    scope
        .ui
        .progress(&format!("failover {run} completed\n{}", summary(&r)));
    Ok(())
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Interrupted => "interrupted",
        StepStatus::Failed => "FAILED",
        StepStatus::Done => "done",
        StepStatus::FailedContinued => "failed (continued)",
    }
}

pub fn status_json(r: &Replay) -> Value {
    let mut v = serde_json::to_value(r).expect("serialisable");
    v["rto_ms"] = json!(r.rto().map(|d| d.num_milliseconds()));
    v["rto_ends_at"] = json!(r
        .service_restored
        .clone()
        .unwrap_or_else(|| "the last verify step".into()));
    v["rpo"] = r.rpo().unwrap_or(Value::Null);
    v
}

/// `cexdr failover status`: the text form.
pub fn status_text(r: &Replay) -> String {
    let mut s = format!(
        "run {} of runbook {}: {}\nstarted {} by {}{}\n",
        r.run,
        r.runbook,
        match (r.outcome, r.interrupted) {
            (Some(RunOutcome::Succeeded), _) => "succeeded".to_owned(),
            (Some(RunOutcome::Failed), _) =>
                format!("FAILED at step {}", r.failed_step.as_deref().unwrap_or("?")),
            (Some(RunOutcome::Refused), _) => "refused (the primary answered)".to_owned(),
            (None, true) => "interrupted (resumable)".to_owned(),
            (None, false) => "unfinished (running, or killed: resumable)".to_owned(),
        },
        r.started_at.to_rfc3339(),
        r.started_by,
        if r.resumed > 0 {
            format!(", resumed {} time(s)", r.resumed)
        } else {
            String::new()
        }
    );
    s.push_str(&format!(
        "{:<3} {:<24} {:<20} {:>8} {:>10}\n",
        "#", "STEP", "STATUS", "ATTEMPTS", "TOOK"
    ));
    for (i, st) in r.steps.iter().enumerate() {
        s.push_str(&format!(
            "{:<3} {:<24} {:<20} {:>8} {:>10}\n",
            i + 1,
            st.name,
            status_word(st.status),
            st.attempts,
            st.elapsed_ms
                .map(|ms| human_duration(Duration::from_millis(ms)))
                .unwrap_or_else(|| "-".into())
        ));
        if let (Some(e), StepStatus::Failed | StepStatus::Interrupted) = (&st.last_error, st.status)
        {
            s.push_str(&format!("    last error: {e}\n"));
        }
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("error: {e}\n"));
    }
    for f in &r.forced {
        s.push_str(&format!("forced: {f}\n"));
    }
    for (event, d) in &r.notifications {
        s.push_str(&format!(
            "notified {event} via {}: {}\n",
            d.channel,
            if d.ok {
                "ok".to_owned()
            } else {
                format!("FAILED ({})", d.error.as_deref().unwrap_or("?"))
            }
        ));
    }
    match r.rto() {
        Some(d) => s.push_str(&format!("{}: {}\n", rto_label(r), fmt_chrono(d))),
        None if r.service_restored.is_some() => s.push_str(&format!(
            "RTO: not measured (step {} not done)\n",
            r.service_restored.as_deref().unwrap_or("?")
        )),
        None => s.push_str("RTO: not measured (no verify step done)\n"),
    }
    if let Some(rpo) = r.rpo() {
        s.push_str(&rpo_line(&rpo));
    }
    s
}

/// Finds a run's journal (the latest when `run` is None) and replays it.
pub fn status(dir: &Path, run: Option<&str>) -> Result<Replay> {
    let path = match run {
        Some(r) => journal::run_path(dir, r),
        None => journal::list_runs(dir)?
            .pop()
            .ok_or_else(|| Error::Usage(format!("no failover runs in {}", dir.display())))?,
    };
    if !path.exists() {
        return Err(Error::Usage(format!(
            "no run {} in {}",
            run.unwrap_or("?"),
            dir.display()
        )));
    }
    let (entries, _) = journal::read_entries(&path)?;
    Ok(Replay::from_entries(&entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::journal::Entry;
    use crate::notify::Delivery;
    use chrono::{DateTime, TimeZone};

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap() + chrono::Duration::seconds(s as i64)
    }

    fn started(step: &str, attempt: u32) -> Record {
        Record::StepStarted {
            step: step.into(),
            attempt,
        }
    }

    fn done(step: &str, outcome: StepOutcome, details: Value, elapsed_ms: u64) -> Record {
        Record::StepDone {
            step: step.into(),
            outcome,
            details,
            elapsed_ms,
        }
    }

    fn notified(event: &str, error: Option<&str>, s: u32) -> Record {
        Record::Notified {
            event: event.into(),
            delivery: Delivery {
                channel: "slack".into(),
                ok: error.is_none(),
                error: error.map(str::to_owned),
                at: at(s),
            },
        }
    }

    /// The first run: started, primary-down done, killed inside dns.
    fn first_run() -> Vec<(u32, Record)> {
        vec![
            (
                0,
                Record::RunStarted {
                    run: "20261125T030000000Z-abcd".into(),
                    runbook: "cex".into(),
                    file: "runbooks/cex.toml".into(),
                    sha256: "00".into(),
                    plan: vec![
                        "primary-down:check-primary".into(),
                        "dns:dns-switch".into(),
                        "verify:verify".into(),
                        "tell:notify".into(),
                    ],
                    by: "sre@ops1".into(),
                    force: false,
                    service_restored: None,
                },
            ),
            (1, notified("start", None, 1)),
            (1, started("primary-down", 1)),
            (7, done("primary-down", StepOutcome::Ok, json!({}), 6000)),
            (7, started("dns", 1)),
            (
                8,
                Record::StepProgress {
                    step: "dns".into(),
                    data: json!({ "change-id": "C1" }),
                },
            ),
        ]
    }

    /// Resumed by someone else: dns again, verify on its second attempt,
    /// tell failed and continued, the end message undelivered.
    fn resumed_run() -> Vec<(u32, Record)> {
        vec![
            (
                60,
                Record::RunResumed {
                    by: "sre2@ops2".into(),
                },
            ),
            (60, started("dns", 2)),
            (
                95,
                done("dns", StepOutcome::Ok, json!({ "changed": true }), 35000),
            ),
            (95, started("verify", 1)),
            (
                99,
                Record::StepFailed {
                    step: "verify".into(),
                    attempt: 1,
                    error: "step verify: HTTP 503".into(),
                },
            ),
            (99, started("verify", 2)),
            (125, done("verify", StepOutcome::Ok, json!({}), 30000)),
            (125, started("tell", 1)),
            (
                126,
                done("tell", StepOutcome::FailedContinued, json!({}), 1000),
            ),
            (126, notified("end", Some("HTTP 500"), 126)),
            (
                126,
                Record::RunFinished {
                    outcome: RunOutcome::Succeeded,
                    failed_step: None,
                    error: None,
                },
            ),
        ]
    }

    fn journal() -> Vec<Entry> {
        first_run()
            .into_iter()
            .chain(resumed_run())
            .enumerate()
            .map(|(i, (s, record))| Entry {
                seq: i as u64 + 1,
                at: at(s),
                record,
            })
            .collect()
    }

    #[test]
    fn status_of_a_resumed_run_golden() {
        let r = Replay::from_entries(&journal());
        assert_eq!(r.rto(), Some(chrono::Duration::seconds(125)));
        assert_eq!(
            r.step("dns").unwrap().progress,
            vec![json!({ "change-id": "C1" })]
        );
        let want = "\
run 20261125T030000000Z-abcd of runbook cex: succeeded
started 2026-11-25T03:00:00+00:00 by sre@ops1, resumed 1 time(s)
#   STEP                     STATUS               ATTEMPTS       TOOK
1   primary-down             done                        1         6s
2   dns                      done                        2        35s
3   verify                   done                        2        30s
4   tell                     failed (continued)          1         1s
notified start via slack: ok
notified end via slack: FAILED (HTTP 500)
RTO (start → verify green): 125s
";
        assert_eq!(status_text(&r), want);
    }

    #[test]
    fn cool_down_counts_from_the_last_successful_run() {
        let tmp = std::env::temp_dir().join(format!("cexdr-cooldown-{}", std::process::id()));
        let dir = tmp.join("cex");
        let rb = Runbook::parse(
            Path::new("cex.toml"),
            "name = \"cex\"\nfrom-site = \"a\"\nto-site = \"b\"\ncool-down = \"1h\"\n[[step]]\nname = \"x\"\nkind = \"exec\"\nargv = [\"true\"]\n",
        )
        .unwrap();
        let mut j = Journal::create(&dir, "20261125T030000000Z-abcd").unwrap();
        for e in journal() {
            j.append(e.record).unwrap();
        }
        let finished = j.replay().finished_at.unwrap();
        let opts = Options::default();
        let within = safety_checks(&rb, &dir, &opts, finished + chrono::Duration::minutes(59));
        assert!(one_line(&within.unwrap_err()).contains("within the cool-down (1h"));
        assert!(safety_checks(&rb, &dir, &opts, finished + chrono::Duration::minutes(61)).is_ok());
        let forced = Options {
            force: true,
            ..Options::default()
        };
        assert!(safety_checks(&rb, &dir, &forced, finished + chrono::Duration::minutes(1)).is_ok());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn an_interrupted_step_is_reentered_and_done_steps_are_not() {
        let mut e = journal();
        e.truncate(6); // killed while waiting for the DNS change
        let r = Replay::from_entries(&e);
        let st: Vec<_> = r.steps.iter().map(|s| s.status).collect();
        assert_eq!(
            st,
            vec![
                StepStatus::Done,
                StepStatus::Interrupted,
                StepStatus::Pending,
                StepStatus::Pending
            ]
        );
        assert_eq!(r.outcome, None);
        assert_eq!(r.rto(), None);
        assert!(r
            .notified
            .contains(&("start".to_owned(), "slack".to_owned())));
    }
}
