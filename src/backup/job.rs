//! One job run, the same for `cexdr backup` and the daemon: under the job's
//! lease, back up, read the stored objects back (`verify-after-backup`),
//! prune (daemon), then metrics and events (logs, notifications). And one
//! drill run: under the same lease, restore the newest undrilled backup
//! into scratch and record the result.
//!
//! Callers only render: the CLI prints outcomes, the scheduler decides when.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::backup::catalog::{Catalog, Entry, Manifest, Status, Verification};
use crate::backup::metrics::Metrics;
use crate::backup::plan::prune::{self, JobReport};
use crate::backup::plan::verify;
use crate::backup::policy::{Job, Policy};
use crate::backup::{lease, run};
use crate::error::{exit, one_line, Error, Result};
use crate::store::DynStore;

/// Where "now" comes from (tests drive it with tokio's paused clock).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What happened, for logs, notifications (`EventSink`) and tests.
#[derive(Debug, Clone)]
pub enum Event {
    /// A run starts (after jitter and waiting for a free slot).
    Started {
        job: String,
        slot: DateTime<Utc>,
    },
    Succeeded {
        job: String,
        manifest: Box<Manifest>,
    },
    /// The run failed (timeout included) and left nothing listed.
    Failed {
        job: String,
        error: String,
        timed_out: bool,
    },
    /// A slot was not run: the previous run still goes, or another host
    /// holds the lease.
    Skipped {
        job: String,
        slot: DateTime<Utc>,
        reason: String,
    },
    Pruned {
        job: String,
        report: Arc<JobReport>,
    },
    PruneFailed {
        job: String,
        error: String,
    },
    /// The job's binlog archive was pruned (after its backups were).
    BinlogPruned {
        job: String,
        report: Arc<crate::backup::plan::binlog_retention::Report>,
    },
    /// A verification (read-back after a backup, a restore test or drill)
    /// failed; the backup is listed as FAILED.
    VerificationFailed {
        job: String,
        manifest: Box<Manifest>,
        method: String,
        error: String,
    },
    /// A drill passed; `seconds` is the measured restore time.
    Drilled {
        job: String,
        id: String,
        seconds: f64,
    },
    /// A drill could not run at all (no backup, the lease, a bad target).
    DrillFailed {
        job: String,
        error: String,
    },
}

impl Event {
    pub fn job(&self) -> &str {
        match self {
            Event::Started { job, .. }
            | Event::Succeeded { job, .. }
            | Event::Failed { job, .. }
            | Event::Skipped { job, .. }
            | Event::Pruned { job, .. }
            | Event::PruneFailed { job, .. }
            | Event::BinlogPruned { job, .. }
            | Event::VerificationFailed { job, .. }
            | Event::Drilled { job, .. }
            | Event::DrillFailed { job, .. } => job,
        }
    }
}

/// Receives events; a sink's failure never affects a run. Notifications
/// plug in here.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn event(&self, e: &Event);
}

/// The sinks of a run. The daemon delivers each event in its own task (a
/// slow channel never holds a run); a one-shot command waits for delivery,
/// since the process ends right after.
#[derive(Clone, Default)]
pub struct Sinks {
    pub sinks: Vec<Arc<dyn EventSink>>,
    pub wait: bool,
}

impl Sinks {
    pub async fn emit(&self, e: Event) {
        // The daemon's log is its record; a one-shot command prints its
        // own outcome instead.
        if !self.wait {
            log(&e);
        }
        let e = Arc::new(e);
        if self.wait {
            for s in &self.sinks {
                s.event(&e).await;
            }
        } else {
            for s in &self.sinks {
                let (s, e) = (s.clone(), e.clone());
                tokio::spawn(async move { s.event(&e).await });
            }
        }
    }
}

fn log(e: &Event) {
    match e {
        Event::Started { job, slot } => tracing::info!(job, slot = %slot, "run started"),
        Event::Succeeded { job, manifest } => {
            tracing::info!(job, id = %manifest.id, stored_bytes = manifest.stored_bytes, "run succeeded")
        }
        Event::Failed {
            job,
            error,
            timed_out,
        } => tracing::error!(job, timed_out, error = %error, "run failed"),
        Event::Skipped { job, slot, reason } => {
            tracing::warn!(job, slot = %slot, reason = %reason, "run skipped")
        }
        Event::Pruned { job, report } => tracing::info!(
            job,
            removed = report.removed.len(),
            incomplete = report.incomplete.len(),
            locked = report.locked.len(),
            "pruned"
        ),
        Event::PruneFailed { job, error } => tracing::error!(job, error = %error, "prune failed"),
        Event::BinlogPruned { job, report } => tracing::info!(
            job,
            removed = report.removed.len(),
            first = report.removed.first(),
            last = report.removed.last(),
            kept_from = report.plan.kept_from,
            orphans_removed = report.orphans_removed.len(),
            errors = report.errors.len(),
            reason = %report.plan.reason,
            "binlog segments pruned"
        ),
        Event::VerificationFailed {
            job,
            manifest,
            method,
            error,
        } => {
            tracing::error!(job, id = %manifest.id, method, error = %error, "verification failed")
        }
        Event::Drilled { job, id, seconds } => {
            tracing::info!(job, id, seconds, "restore drill passed")
        }
        Event::DrillFailed { job, error } => tracing::error!(job, error = %error, "drill failed"),
    }
}

/// What a job run needs besides the job.
#[derive(Clone)]
pub struct JobEnv {
    pub policy: Arc<Policy>,
    pub store: DynStore,
    pub metrics: Metrics,
    pub sinks: Sinks,
    pub clock: Arc<dyn Clock>,
    pub lease_ttl: Duration,
    /// Prune the job after a successful backup (the daemon's `prune`).
    pub prune: bool,
    /// For reading encrypted backups back (content checks); without it
    /// only the stored bytes are checked.
    pub identities: Option<crate::pipeline::encrypt::Identities>,
    /// Where a run reports its bytes (a terminal's progress line; silent in
    /// the daemon).
    pub progress: crate::base::progress::DynProgress,
}

impl JobEnv {
    async fn catalog(&self) -> Result<Catalog> {
        // Signs like a one-shot run; the key is read per run, so a rotated
        // key file is picked up by the daemon.
        Ok(Catalog::new(self.store.clone())
            .with_signer(self.policy.signer()?)
            .with_identities(self.identities.clone())
            .with_progress(self.progress.clone()))
    }
}

/// How one job run ended.
#[derive(Debug)]
pub struct JobOutcome {
    pub job: String,
    /// The backup (listed), or why there is none.
    pub backup: Result<Manifest>,
    /// The read-back after the backup, if `verify-after-backup`.
    pub read_back: Option<Verification>,
    /// Whether the prune after it went through (None: no prune ran).
    pub pruned: Option<bool>,
}

impl JobOutcome {
    /// 0, or the code of the failure: a failed read-back is exit 4.
    pub fn exit_code(&self) -> i32 {
        match (&self.backup, &self.read_back) {
            (Err(e), _) => e.exit_code(),
            (Ok(_), Some(v)) if v.status == Status::Failed => exit::VERIFY,
            _ => exit::OK,
        }
    }
    pub fn locked(&self) -> bool {
        matches!(&self.backup, Err(e) if matches!(e.root(), Error::Locked { .. }))
    }
}

/// Whether a job reads its backups back: the job's setting, else `[daemon]`'s.
pub fn verify_after(policy: &Policy, job: &Job) -> bool {
    job.verify_after_backup
        .unwrap_or(policy.daemon.verify_after_backup)
}

/// One backup of `job` under its lease: run, read back, prune, then
/// metrics and events. Never returns early: every outcome is in the result.
pub async fn run_job(
    env: &JobEnv,
    job: &Job,
    slot: DateTime<Utc>,
    cancel: CancellationToken,
) -> JobOutcome {
    env.sinks
        .emit(Event::Started {
            job: job.name.clone(),
            slot,
        })
        .await;
    env.metrics.started(&job.name);
    let t0 = tokio::time::Instant::now();
    let res = backup_held(env, job, cancel).await;
    let secs = t0.elapsed().as_secs_f64();
    // Catalog metrics first, so that whoever reacts to the event sees them.
    refresh(&env.store, &env.metrics).await;
    let out = match res {
        Ok(held) => {
            report_backup(env, job, &held.manifest, held.read_back.as_ref(), secs).await;
            let pruned = report_prune(env, job, held.pruned).await;
            JobOutcome {
                job: job.name.clone(),
                backup: Ok(held.manifest),
                read_back: held.read_back,
                pruned,
            }
        }
        Err(e) => {
            report_failure(env, job, slot, &e, secs).await;
            JobOutcome {
                job: job.name.clone(),
                backup: Err(e),
                read_back: None,
                pruned: None,
            }
        }
    };
    refresh(&env.store, &env.metrics).await;
    out
}

/// What a run did under its lease, reported once the lease is released.
struct Held {
    manifest: Manifest,
    read_back: Option<Verification>,
    /// None: no prune ran (not the daemon, or the read-back failed).
    pruned: Option<Result<Pruned>>,
}

/// The backup, its read-back and the prune after it, all under the job's
/// lease (after the store's preflight).
async fn backup_held(env: &JobEnv, job: &Job, cancel: CancellationToken) -> Result<Held> {
    // A missing bucket or bad credentials are reported as such, not as
    // a failure to write the lease.
    if let Err(e) = env.store.preflight().await {
        return Err(e.in_job(&job.name));
    }
    lease::with_lease(
        env.store.clone(),
        &job.name,
        env.lease_ttl,
        cancel,
        |token| async move {
            let cat = env.catalog().await?;
            let m = run::run_held(&cat, job, token.clone()).await?;
            let read_back = if verify_after(&env.policy, job) {
                // A failure to record the read-back is one, too.
                Some(match verify::read_back(&cat, &m).await {
                    Ok(v) => v,
                    Err(e) => failed_record(&m, verify::READ_BACK, &one_line(&e)),
                })
            } else {
                None
            };
            let read_back_ok = read_back
                .as_ref()
                .map(|v| v.status == Status::Ok)
                .unwrap_or(true);
            let pruned = if env.prune && read_back_ok {
                Some(prune_after(&cat, job, &env.policy, env.clock.now(), &token).await)
            } else {
                None
            };
            Ok(Held {
                manifest: m,
                read_back,
                pruned,
            })
        },
    )
    .await
    .map_err(|e| e.in_job(&job.name))
}

/// Metrics and the event of a listed backup: succeeded, or failed by its
/// read-back.
async fn report_backup(
    env: &JobEnv,
    job: &Job,
    m: &Manifest,
    read_back: Option<&Verification>,
    secs: f64,
) {
    match read_back {
        Some(v) if v.status == Status::Failed => {
            // Reported like a failed backup; the backup stays
            // listed, as FAILED verification.
            env.metrics.failed(&job.name, env.clock.now(), secs);
            env.metrics.read_back_failed(&job.name);
            env.sinks
                .emit(Event::VerificationFailed {
                    job: job.name.clone(),
                    manifest: Box::new(m.clone()),
                    method: verify::READ_BACK.into(),
                    error: v.error.clone().unwrap_or_else(|| "failed".into()),
                })
                .await;
        }
        _ => {
            env.metrics.succeeded(m, secs);
            env.sinks
                .emit(Event::Succeeded {
                    job: job.name.clone(),
                    manifest: Box::new(m.clone()),
                })
                .await;
        }
    }
}

/// Metrics and events of the prune after a backup; whether it went
/// through (None: no prune ran).
async fn report_prune(env: &JobEnv, job: &Job, pruned: Option<Result<Pruned>>) -> Option<bool> {
    match pruned {
        Some(Ok((r, binlog))) => {
            env.sinks
                .emit(Event::Pruned {
                    job: job.name.clone(),
                    report: Arc::new(r),
                })
                .await;
            Some(report_binlog_prune(env, job, binlog).await)
        }
        Some(Err(e)) => {
            env.metrics.prune_failed(&job.name);
            env.sinks
                .emit(Event::PruneFailed {
                    job: job.name.clone(),
                    error: one_line(&e),
                })
                .await;
            Some(false)
        }
        None => None,
    }
}

/// The binlog archive's part of a prune (None: the job has no archive);
/// whether it went through.
async fn report_binlog_prune(
    env: &JobEnv,
    job: &Job,
    binlog: Option<Result<crate::backup::plan::binlog_retention::Report>>,
) -> bool {
    match binlog {
        Some(Ok(br)) => {
            let ok = br.errors.is_empty();
            if !ok {
                env.metrics.prune_failed(&job.name);
                env.sinks
                    .emit(Event::PruneFailed {
                        job: job.name.clone(),
                        error: format!("binlog archive: {}", br.errors.join("; ")),
                    })
                    .await;
            }
            env.sinks
                .emit(Event::BinlogPruned {
                    job: job.name.clone(),
                    report: Arc::new(br),
                })
                .await;
            ok
        }
        Some(Err(e)) => {
            env.metrics.prune_failed(&job.name);
            env.sinks
                .emit(Event::PruneFailed {
                    job: job.name.clone(),
                    error: format!("binlog archive: {}", one_line(&e)),
                })
                .await;
            false
        }
        None => true,
    }
}

/// Metrics and the event of a run that left no backup: skipped (the
/// lease), or failed.
async fn report_failure(env: &JobEnv, job: &Job, slot: DateTime<Utc>, e: &Error, secs: f64) {
    if matches!(e.root(), Error::Locked { .. }) {
        env.metrics.not_run(&job.name);
        env.sinks
            .emit(Event::Skipped {
                job: job.name.clone(),
                slot,
                reason: one_line(e),
            })
            .await;
    } else if matches!(e.root(), Error::Interrupted) && env.sinks.wait {
        // A one-shot run its operator interrupted: counted, not
        // notified (the daemon's interrupted runs are, below).
        env.metrics.failed(&job.name, env.clock.now(), secs);
    } else {
        env.metrics.failed(&job.name, env.clock.now(), secs);
        env.sinks
            .emit(Event::Failed {
                job: job.name.clone(),
                error: one_line(e),
                timed_out: matches!(e.root(), Error::Timeout { .. }),
            })
            .await;
    }
}

/// The job asked to run an incremental backup (`backup --incremental`, the
/// incremental schedule); refused by name for a job that cannot.
pub fn incremental(job: &Job) -> Result<Job> {
    use crate::backup::source::{kinds::SourceSpec, mysql::physical::Level};
    let mut job = job.clone();
    match &mut job.source {
        SourceSpec::Mysql(s) if s.physical.is_some() => {
            if let Some(p) = s.physical.as_mut() {
                p.level = Level::Incremental;
            }
            Ok(job)
        }
        _ => Err(Error::Usage(format!(
            "job {}: --incremental applies to method = \"physical\" mysql jobs",
            job.name
        ))),
    }
}

/// Several jobs one after the other (`cexdr backup`): stops at an
/// interrupt; the exit code is the worst outcome (`exit::worst`: an
/// interrupt, then any failure, then a lock; a lock never hides a failure).
pub async fn run_jobs(
    env: &JobEnv,
    jobs: &[&Job],
    cancel: CancellationToken,
) -> (Vec<JobOutcome>, i32) {
    let mut outs = Vec::new();
    let mut code = exit::OK;
    for job in jobs {
        if cancel.is_cancelled() {
            code = exit::INTERRUPTED;
            break;
        }
        let o = run_job(env, job, env.clock.now(), cancel.clone()).await;
        let c = o.exit_code();
        let stop = matches!(&o.backup, Err(Error::Interrupted));
        code = exit::worst(code, c);
        outs.push(o);
        if stop {
            break;
        }
    }
    (outs, code)
}

fn failed_record(m: &Manifest, method: &str, error: &str) -> Verification {
    Verification {
        backup_id: m.id.clone(),
        job: m.job.clone(),
        at: Utc::now(),
        status: Status::Failed,
        method: method.into(),
        tool_version: crate::backup::catalog::TOOL_VERSION.into(),
        host: crate::base::host_name(),
        checks: vec![],
        error: Some(error.to_owned()),
        details: serde_json::Value::Null,
    }
}

/// Catalog-derived metrics and the report's input, read again.
pub async fn refresh(store: &DynStore, metrics: &Metrics) {
    let cat = Catalog::new(store.clone());
    match crate::backup::report::gather(&cat, &metrics.job_names()).await {
        Ok(input) => {
            metrics.refresh_catalog(&input.entries);
            metrics.set_report_input(input);
        }
        Err(e) => {
            metrics.catalog_refresh_failed();
            tracing::warn!(error = %one_line(&e), "metrics: cannot read the catalog");
        }
    }
}

/// What the daemon's prune after a backup did: the backups' report, and
/// the binlog archive's (a mysql job with `binlog`), which may have failed
/// on its own.
type Pruned = (
    JobReport,
    Option<Result<crate::backup::plan::binlog_retention::Report>>,
);

/// Prune after a successful backup: retention, incomplete folders and
/// stale uploads of this job, then its binlog segments older than what the
/// oldest kept base needs (so the bases are pruned first). A backup report
/// with errors becomes an error.
async fn prune_after(
    catalog: &Catalog,
    job: &Job,
    policy: &Policy,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<Pruned> {
    let opts = prune::Options {
        dry_run: false,
        grace: policy.daemon.incomplete_grace,
        now,
    };
    let report = prune::prune_job(catalog, job.prune_rules(), &opts).await?;
    let uploads = prune::stale_uploads(catalog, &format!("{}/", job.name), &opts).await?;
    if let Some(e) = prune::failure(&report) {
        return Err(e);
    }
    if let Some(e) = uploads.errors.first() {
        return Err(Error::Store {
            store: catalog.store().describe(),
            op: "abort-upload",
            key: job.name.clone(),
            msg: e.clone(),
        });
    }
    let binlog = prune_binlog(catalog, job, now, false, Some(cancel))
        .await
        .transpose();
    Ok((report, binlog))
}

/// The binlog archive of `job` (a mysql job with a `binlog` table; None
/// otherwise), pruned to what its kept bases need. Run after the job's
/// backups were pruned, so the bases it reads are the kept ones. The
/// archiver may keep appending meanwhile: prune only removes segments
/// older than the first one the oldest kept base needs.
///
/// `wait_for_archive` (the daemon, right after a backup; waiting ends when
/// it is cancelled): when the oldest
/// kept base is the backup just taken, the archive has not reached its
/// position yet and the plan removes nothing; with `keep = { last = 1 }`
/// that would be so at every prune. So it plans again every second for up
/// to three flush intervals (+10 s) while the archiver catches up.
async fn prune_binlog(
    catalog: &Catalog,
    job: &Job,
    now: DateTime<Utc>,
    dry_run: bool,
    wait_for_archive: Option<&CancellationToken>,
) -> Result<Option<crate::backup::plan::binlog_retention::Report>> {
    let crate::backup::source::kinds::SourceSpec::Mysql(m) = &job.source else {
        return Ok(None);
    };
    let Some(b) = &m.binlog else {
        return Ok(None);
    };
    let give_up = tokio::time::Instant::now() + b.flush_interval * 3 + Duration::from_secs(10);
    loop {
        let r =
            crate::backup::plan::binlog_retention::prune(catalog, &job.name, b.keep, now, dry_run)
                .await
                .map_err(|e| e.in_job(&job.name))?;
        let Some(cancel) = wait_for_archive.filter(|_| r.plan.base_ahead) else {
            return Ok(Some(r));
        };
        if tokio::time::Instant::now() >= give_up {
            return Ok(Some(r));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(Some(r)),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

// ---------------------------------------------------------------- drills

/// How a drill ended.
#[derive(Debug)]
pub struct DrillOutcome {
    pub job: String,
    /// The recorded restore-test verification, or why there is none.
    pub record: Result<Verification>,
}

impl DrillOutcome {
    pub fn exit_code(&self) -> i32 {
        match &self.record {
            Err(e) => e.exit_code(),
            Ok(v) if v.status == Status::Failed => exit::VERIFY,
            Ok(_) => exit::OK,
        }
    }
}

/// The backup a drill tests: the newest one without a restore test, else
/// the newest.
pub fn drill_candidate(entries: &[Entry]) -> Option<&Entry> {
    entries
        .iter()
        .rev()
        .find(|e| {
            !e.verifications
                .iter()
                .any(|v| v.method == verify::RESTORE_TEST)
        })
        .or_else(|| entries.last())
}

/// The scratch target of a job's drill.
pub fn drill_target(job: &Job) -> Result<crate::backup::source::ScratchTarget> {
    let d = job.drill.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "job {} has no drill; add drill = {{ schedule = \"…\", … }} to it",
            job.name
        ))
    })?;
    let source_url = job.source.info().server_url().map(str::to_owned);
    Ok(crate::backup::source::ScratchTarget {
        url: d.target.clone(),
        password: d.password.clone(),
        folder: d.scratch.clone(),
        source_url,
        allow_source_server: d.allow_source_server,
        timeout: d.timeout,
    })
}

/// A point-in-time drill to the newest archived transaction (policy
/// `drill = { point-in-time = "newest", … }`).
async fn pitr_drill(
    cat: &crate::backup::catalog::Catalog,
    job: &Job,
    target: &crate::backup::source::ScratchTarget,
) -> Result<(
    crate::backup::catalog::Entry,
    crate::backup::catalog::Verification,
)> {
    use crate::backup::binlog::replay::Until;
    use crate::backup::catalog::segment;
    use crate::backup::pitr;
    let a = segment::load(cat, &job.name, false).await?;
    let newest = a.newest().ok_or_else(|| {
        Error::RestoreRefused(format!(
            "job {}: point-in-time drill: the binlog archive has no segment yet",
            job.name
        ))
    })?;
    let until = Until::Gtid(newest.manifest.gtid_end.clone());
    let url = target.url.clone().unwrap_or_default();
    let req = pitr::Request {
        job: &job.name,
        base_id: None,
        until: &until,
        to: &url,
        batch: 1000,
        dry_run: false,
        databases_selected: pitr::selects_databases(job),
    };
    let password = match &target.password {
        crate::backup::policy::Secret::Env(v) => Some(v.as_str()),
        _ => None,
    };
    let v = pitr::pitr_drill(cat, &req, password).await?;
    let e = cat.find(&v.backup_id).await?;
    Ok((e, v))
}

/// One drill of `job` under its lease (no backup or prune of the job runs
/// meanwhile): restore test of the newest undrilled backup, recorded and
/// signed; metrics and events after.
pub async fn drill_job(env: &JobEnv, job: &Job, cancel: CancellationToken) -> DrillOutcome {
    let res = async {
        let target = drill_target(job)?;
        lease::with_lease(
            env.store.clone(),
            &job.name,
            env.lease_ttl,
            cancel,
            |token| async move {
                let cat = env.catalog().await?;
                if job.drill.as_ref().is_some_and(|d| d.point_in_time) {
                    return tokio::select! {
                        biased;
                        _ = token.cancelled() => Err(Error::Interrupted),
                        v = pitr_drill(&cat, job, &target) => v,
                    };
                }
                // Full verification history: the candidate is the newest
                // backup without a restore test.
                let entries = cat.list_full(Some(&job.name)).await?;
                let Some(e) = drill_candidate(&entries).cloned() else {
                    return Err(Error::RestoreRefused(format!(
                        "job {} has no backup to drill",
                        job.name
                    )));
                };
                tokio::select! {
                    biased;
                    _ = token.cancelled() => Err(Error::Interrupted),
                    v = verify::restore_test(&cat, &e, &target) => v.map(|v| (e, v)),
                }
            },
        )
        .await
    }
    .await
    .map_err(|e| e.in_job(&job.name));
    refresh(&env.store, &env.metrics).await;
    match res {
        Ok((e, v)) => {
            let seconds = v.details["seconds"].as_f64().unwrap_or(0.0);
            if v.status == Status::Ok {
                env.metrics.drill_done(&job.name, true, seconds);
                env.sinks
                    .emit(Event::Drilled {
                        job: job.name.clone(),
                        id: e.manifest.id.clone(),
                        seconds,
                    })
                    .await;
            } else {
                env.metrics.drill_done(&job.name, false, seconds);
                env.sinks
                    .emit(Event::VerificationFailed {
                        job: job.name.clone(),
                        manifest: Box::new(e.manifest.clone()),
                        method: verify::RESTORE_TEST.into(),
                        error: v.error.clone().unwrap_or_else(|| "failed".into()),
                    })
                    .await;
            }
            DrillOutcome {
                job: job.name.clone(),
                record: Ok(v),
            }
        }
        Err(err) => {
            if !matches!(err.root(), Error::Locked { .. } | Error::Interrupted) {
                env.metrics.drill_done(&job.name, false, 0.0);
                env.sinks
                    .emit(Event::DrillFailed {
                        job: job.name.clone(),
                        error: one_line(&err),
                    })
                    .await;
            }
            DrillOutcome {
                job: job.name.clone(),
                record: Err(err),
            }
        }
    }
}

/// `cexdr verify`: each backup checked (or restore-tested) and recorded;
/// failures notified. Stops at an interrupt.
pub async fn verify_backups(
    env: &JobEnv,
    catalog: &Catalog,
    entries: &[Entry],
    restore_test: Option<&crate::backup::source::ScratchTarget>,
    cancel: CancellationToken,
) -> Result<Vec<Verification>> {
    let mut out = Vec::new();
    for e in entries {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let v = match restore_test {
            None => verify::verify(catalog, e).await?,
            Some(t) => {
                // The job's own server is the source to tell apart; an
                // explicit verify --restore-test may use it (scratch
                // databases only, said in the record), as before drills.
                let mut t = t.clone();
                if let Some(job) = env.policy.jobs.iter().find(|j| j.name == e.manifest.job) {
                    if let crate::backup::source::kinds::SourceSpec::Mysql(m) = &job.source {
                        t.source_url = Some(m.url.clone());
                    }
                }
                verify::restore_test(catalog, e, &t).await?
            }
        };
        if v.status == Status::Failed {
            env.sinks
                .emit(Event::VerificationFailed {
                    job: e.manifest.job.clone(),
                    manifest: Box::new(e.manifest.clone()),
                    method: v.method.clone(),
                    error: v.error.clone().unwrap_or_else(|| "failed".into()),
                })
                .await;
        }
        out.push(v);
    }
    Ok(out)
}

// ---------------------------------------------------------------- prune

/// What `cexdr prune` did: per-job reports, jobs skipped because another
/// run holds them, stale uploads, and the exit code.
#[derive(Debug)]
pub struct PruneRun {
    pub reports: Vec<JobReport>,
    /// One message per job another run holds (exit 3).
    pub locked: Vec<String>,
    pub uploads: prune::UploadsReport,
    /// The binlog archives of mysql jobs that have one, pruned after their
    /// backups (the kept bases decide which segments stay).
    pub binlog: Vec<crate::backup::plan::binlog_retention::Report>,
    pub code: i32,
}

/// `cexdr prune`: each job under its lease (a dry run needs none: it
/// changes nothing and may preview while a backup runs), then the stale
/// uploads under `prefix`. Prune errors are notified and exit 1.
pub async fn prune_jobs(
    env: &JobEnv,
    catalog: &Catalog,
    jobs: &[&Job],
    opts: &prune::Options,
    prefix: &str,
    cancel: CancellationToken,
) -> Result<PruneRun> {
    let mut reports = Vec::new();
    let mut locked = Vec::new();
    let mut binlog = Vec::new();
    let mut code = exit::OK;
    for job in jobs {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let res = if opts.dry_run {
            prune::prune_job(catalog, job.prune_rules(), opts).await
        } else {
            lease::with_lease(
                catalog.store().clone(),
                &job.name,
                env.lease_ttl,
                cancel.clone(),
                |_| async move { prune::prune_job(catalog, job.prune_rules(), opts).await },
            )
            .await
        };
        match res {
            Ok(r) => {
                if !r.errors.is_empty() {
                    code = code.max(exit::FAILED);
                    env.sinks
                        .emit(Event::PruneFailed {
                            job: job.name.clone(),
                            error: r.errors.join("; "),
                        })
                        .await;
                }
                reports.push(r);
                if let Some(br) = prune_binlog(catalog, job, opts.now, opts.dry_run, None).await? {
                    if !br.errors.is_empty() {
                        code = code.max(exit::FAILED);
                    }
                    binlog.push(br);
                }
            }
            Err(e) if matches!(e.root(), Error::Locked { .. }) => {
                locked.push(format!("{}; not pruned", one_line(&e)));
                code = exit::LOCKED;
            }
            Err(e) => return Err(e.in_job(&job.name)),
        }
    }
    let uploads = prune::stale_uploads(catalog, prefix, opts).await?;
    if !uploads.errors.is_empty() {
        code = code.max(exit::FAILED);
    }
    Ok(PruneRun {
        reports,
        locked,
        uploads,
        binlog,
        code,
    })
}
