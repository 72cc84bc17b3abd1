//! The daemon's scheduler: every job on its cron schedule, at most
//! `max-parallel` at once, each run under the job's store lease (backup,
//! then prune), events to sinks (logs, notifications), metrics.
//!
//! Time comes from an injected `Clock`, so tests drive it with tokio's
//! paused clock. A ticker computes its next slot strictly after the time
//! it fired, so a wall-clock jump backwards never runs a slot twice and a
//! jump forwards runs the missed slot once; it sleeps at most a minute at a
//! time so that jumps are noticed.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backup::catalog::{Catalog, Manifest};
use crate::backup::metrics::Metrics;
use crate::backup::policy::{Job, Policy};
use crate::backup::prune::{self, JobReport};
use crate::backup::{lease, run};
use crate::error::{one_line, Error, Result};
use crate::store::DynStore;

/// Where "now" comes from.
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

/// Wall-clock time that advances with tokio's clock (paused in tests).
pub struct TokioClock {
    base: DateTime<Utc>,
    at: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            at: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::Duration::from_std(self.at.elapsed()).expect("elapsed fits")
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
}

impl Event {
    pub fn job(&self) -> &str {
        match self {
            Event::Started { job, .. }
            | Event::Succeeded { job, .. }
            | Event::Failed { job, .. }
            | Event::Skipped { job, .. }
            | Event::Pruned { job, .. }
            | Event::PruneFailed { job, .. } => job,
        }
    }
}

/// Receives events; a sink's failure or slowness never affects a run
/// (each delivery is its own task). Notifications plug in here.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn event(&self, e: &Event);
}

/// Messages from the daemon's signal handling.
pub enum Control {
    /// A validated new policy and its store (SIGHUP).
    Reload(Box<Policy>, DynStore),
    /// Stop starting runs; let running ones finish within the grace period.
    Stop,
}

#[derive(Debug)]
struct Trigger {
    job: String,
    slot: DateTime<Utc>,
}

pub struct Scheduler {
    policy: Arc<Policy>,
    store: DynStore,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    sinks: Vec<Arc<dyn EventSink>>,
    lease_ttl: Duration,
}

impl Scheduler {
    pub fn new(policy: Policy, store: DynStore, clock: Arc<dyn Clock>, metrics: Metrics) -> Self {
        Scheduler {
            policy: Arc::new(policy),
            store,
            clock,
            metrics,
            sinks: Vec::new(),
            lease_ttl: lease::DEFAULT_TTL,
        }
    }

    pub fn add_sink(&mut self, sink: Arc<dyn EventSink>) {
        self.sinks.push(sink);
    }

    /// Runs until `Control::Stop` (or the control channel closes).
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) -> Result<()> {
        let (tx, mut triggers) = mpsc::unbounded_channel::<Trigger>();
        let stopping = CancellationToken::new();
        let abort = CancellationToken::new();
        let mut running: HashSet<String> = HashSet::new();
        let mut runs: JoinSet<String> = JoinSet::new();
        let mut sem = Arc::new(Semaphore::new(self.policy.daemon.max_parallel));
        self.metrics.set_policy(&self.policy, self.clock.now());
        self.refresh_metrics().await;

        let mut tickers = self.start_tickers(&tx);
        self.catch_up(&tx).await;
        tracing::info!(jobs = self.policy.jobs.len(), max_parallel = self.policy.daemon.max_parallel, timezone = %self.policy.daemon.timezone, "scheduler started");

        loop {
            tokio::select! {
                msg = control.recv() => match msg {
                    Some(Control::Reload(p, store)) => {
                        tickers.cancel();
                        if p.daemon.max_parallel != self.policy.daemon.max_parallel {
                            sem = Arc::new(Semaphore::new(p.daemon.max_parallel));
                        }
                        self.policy = Arc::new(*p);
                        self.store = store;
                        self.metrics.set_policy(&self.policy, self.clock.now());
                        tickers = self.start_tickers(&tx);
                        tracing::info!(file = %self.policy.file.display(), jobs = self.policy.jobs.len(), "policy reloaded");
                    }
                    Some(Control::Stop) | None => break,
                },
                Some(t) = triggers.recv() => {
                    let Some(job) = self.policy.jobs.iter().find(|j| j.name == t.job).cloned() else {
                        continue; // removed by a reload
                    };
                    if running.contains(&job.name) {
                        self.emit(Event::Skipped { job: job.name.clone(), slot: t.slot, reason: "the previous run is still going".into() });
                        continue;
                    }
                    running.insert(job.name.clone());
                    let ctx = RunCtx {
                        policy: self.policy.clone(),
                        store: self.store.clone(),
                        clock: self.clock.clone(),
                        metrics: self.metrics.clone(),
                        sinks: self.sinks.clone(),
                        lease_ttl: self.lease_ttl,
                        sem: sem.clone(),
                        stopping: stopping.clone(),
                        abort: abort.clone(),
                    };
                    runs.spawn(async move {
                        ctx.run(job.clone(), t.slot).await;
                        job.name
                    });
                }
                Some(done) = runs.join_next() => {
                    match done {
                        Ok(name) => { running.remove(&name); }
                        Err(e) => tracing::error!(error = %e, "a run task panicked"),
                    }
                }
            }
        }

        // Graceful stop: no new runs; running ones get the grace period.
        tickers.cancel();
        stopping.cancel();
        let grace = self.policy.daemon.shutdown_grace;
        if !runs.is_empty() {
            tracing::info!(
                running = runs.len(),
                grace_seconds = grace.as_secs(),
                "stopping: waiting for running jobs"
            );
        }
        let drained =
            tokio::time::timeout(grace, async { while runs.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                running = runs.len(),
                "grace period over: stopping running jobs (uploads aborted, nothing listed)"
            );
            abort.cancel();
            while runs.join_next().await.is_some() {}
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }

    fn start_tickers(&self, tx: &mpsc::UnboundedSender<Trigger>) -> CancellationToken {
        let stop = CancellationToken::new();
        for job in &self.policy.jobs {
            let Some(schedule) = job.schedule.clone() else {
                continue;
            };
            let (tx, stop, clock) = (tx.clone(), stop.clone(), self.clock.clone());
            let (name, tz) = (job.name.clone(), self.policy.daemon.timezone);
            tokio::spawn(async move {
                let mut next = schedule.after_in(tz, clock.now()).next();
                while let Some(t) = next {
                    loop {
                        let now = clock.now();
                        if now >= t {
                            break;
                        }
                        let wait = (t - now)
                            .to_std()
                            .unwrap_or_default()
                            .min(Duration::from_secs(60));
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                    if stop.is_cancelled()
                        || tx
                            .send(Trigger {
                                job: name.clone(),
                                slot: t,
                            })
                            .is_err()
                    {
                        return;
                    }
                    next = schedule.after_in(tz, clock.now().max(t)).next();
                }
            });
        }
        stop
    }

    /// `catch-up`: a job whose newest backup is older than its latest
    /// scheduled slot (the daemon was down) runs once now.
    async fn catch_up(&self, tx: &mpsc::UnboundedSender<Trigger>) {
        let now = self.clock.now();
        let catalog = Catalog::new(self.store.clone());
        for job in &self.policy.jobs {
            let (Some(schedule), true) = (
                &job.schedule,
                job.catch_up.unwrap_or(self.policy.daemon.catch_up),
            ) else {
                continue;
            };
            let last = match catalog.list(Some(&job.name)).await {
                Ok(entries) => entries.last().map(|e| e.manifest.started_at),
                Err(e) => {
                    tracing::warn!(job = %job.name, error = %one_line(&e), "catch-up: cannot read the catalog; skipping");
                    continue;
                }
            };
            // Never backed up: a slot in the past week counts as missed.
            let from = last.unwrap_or(now - chrono::Duration::days(7));
            let missed = schedule
                .after_in(self.policy.daemon.timezone, from)
                .take(1_000_000)
                .take_while(|t| *t <= now)
                .last();
            if let Some(slot) = missed {
                tracing::info!(job = %job.name, missed = %slot, last_backup = ?last, "catch-up: running a missed run");
                let _ = tx.send(Trigger {
                    job: job.name.clone(),
                    slot,
                });
            }
        }
    }

    async fn refresh_metrics(&self) {
        refresh(&self.store, &self.metrics).await
    }

    fn emit(&self, e: Event) {
        emit(&self.sinks, e)
    }
}

async fn refresh(store: &DynStore, metrics: &Metrics) {
    match Catalog::new(store.clone()).list(None).await {
        Ok(entries) => metrics.refresh_catalog(&entries),
        Err(e) => {
            metrics.catalog_refresh_failed();
            tracing::warn!(error = %one_line(&e), "metrics: cannot read the catalog");
        }
    }
}

fn emit(sinks: &[Arc<dyn EventSink>], e: Event) {
    match &e {
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
    }
    let e = Arc::new(e);
    for s in sinks {
        let (s, e) = (s.clone(), e.clone());
        tokio::spawn(async move { s.event(&e).await });
    }
}

struct RunCtx {
    policy: Arc<Policy>,
    store: DynStore,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    sinks: Vec<Arc<dyn EventSink>>,
    lease_ttl: Duration,
    sem: Arc<Semaphore>,
    stopping: CancellationToken,
    abort: CancellationToken,
}

impl RunCtx {
    async fn run(self, job: Job, slot: DateTime<Utc>) {
        let jitter = job.jitter.unwrap_or(self.policy.daemon.jitter);
        if !jitter.is_zero() {
            let d = Duration::from_millis(rand::random::<u64>() % jitter.as_millis().max(1) as u64);
            tokio::select! {
                _ = self.stopping.cancelled() => return,
                _ = tokio::time::sleep(d) => {}
            }
        }
        let _permit = tokio::select! {
            _ = self.stopping.cancelled() => return,
            p = self.sem.clone().acquire_owned() => p.expect("semaphore open"),
        };
        if self.stopping.is_cancelled() {
            return;
        }
        emit(
            &self.sinks,
            Event::Started {
                job: job.name.clone(),
                slot,
            },
        );
        self.metrics.started(&job.name);
        let t0 = tokio::time::Instant::now();
        let store = self.store.clone();
        let (policy, clock) = (self.policy.clone(), self.clock.clone());
        let j = job.clone();
        let res = lease::with_lease(
            store.clone(),
            &job.name,
            self.lease_ttl,
            self.abort.clone(),
            move |token| {
                let job = j;
                async move {
                    // The daemon signs like a one-shot run (key read per run,
                    // so a rotated key file is picked up).
                    let cat = Catalog::new(store.clone())
                        .with_signer(crate::backup::signing::Signer::for_policy(&policy)?);
                    let m = run::run_held(&cat, &job, token).await?;
                    let pruned = if policy.daemon.prune {
                        Some(prune_after(&cat, &job, &policy, clock.now()).await)
                    } else {
                        None
                    };
                    Ok((m, pruned))
                }
            },
        )
        .await;
        let secs = t0.elapsed().as_secs_f64();
        // Catalog metrics first, so that whoever reacts to the event sees them.
        refresh(&self.store, &self.metrics).await;
        match res {
            Ok((m, pruned)) => {
                self.metrics.succeeded(&m, secs);
                emit(
                    &self.sinks,
                    Event::Succeeded {
                        job: job.name.clone(),
                        manifest: Box::new(m),
                    },
                );
                match pruned {
                    Some(Ok(r)) => emit(
                        &self.sinks,
                        Event::Pruned {
                            job: job.name.clone(),
                            report: Arc::new(r),
                        },
                    ),
                    Some(Err(e)) => {
                        self.metrics.prune_failed(&job.name);
                        emit(
                            &self.sinks,
                            Event::PruneFailed {
                                job: job.name.clone(),
                                error: one_line(&e),
                            },
                        );
                    }
                    None => {}
                }
            }
            Err(e) if matches!(e.root(), Error::Locked { .. }) => {
                self.metrics.not_run(&job.name);
                emit(
                    &self.sinks,
                    Event::Skipped {
                        job: job.name.clone(),
                        slot,
                        reason: one_line(&e),
                    },
                );
            }
            Err(e) => {
                self.metrics.failed(&job.name, self.clock.now(), secs);
                let timed_out = matches!(e.root(), Error::Timeout { .. });
                emit(
                    &self.sinks,
                    Event::Failed {
                        job: job.name.clone(),
                        error: one_line(&e),
                        timed_out,
                    },
                );
            }
        }
        refresh(&self.store, &self.metrics).await;
    }
}

/// Prune after a successful backup: retention, incomplete folders and
/// stale uploads of this job. A report with errors becomes an error.
async fn prune_after(
    catalog: &Catalog,
    job: &Job,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<JobReport> {
    let opts = prune::Options {
        dry_run: false,
        grace: policy.daemon.incomplete_grace,
        now,
    };
    let report = prune::prune_job(catalog, job, &opts).await?;
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
    Ok(report)
}

/// `cexdr daemon`: loads the policy, serves metrics, runs the scheduler.
/// `stop` (SIGTERM/SIGINT) stops gracefully; SIGHUP reloads the policy
/// (an invalid one is rejected and the old one keeps running).
pub async fn daemon(
    policy_file: std::path::PathBuf,
    stop: CancellationToken,
    sinks: Vec<Arc<dyn EventSink>>,
) -> Result<()> {
    let policy = Policy::load(&policy_file)?;
    let store = crate::store::build(&policy.store).await?;
    if let Err(e) = store.preflight().await {
        // Not fatal: the store may come back before the first run.
        tracing::error!(error = %one_line(&e), "store preflight failed");
    }
    let metrics = Metrics::new();
    let serving = CancellationToken::new();
    if let Some(addr) = policy.daemon.metrics_listen {
        let (bound, _task) =
            crate::backup::metrics::serve(metrics.clone(), addr, serving.clone()).await?;
        tracing::info!(address = %format!("http://{bound}/metrics"), "serving metrics");
    }
    let listen = policy.daemon.metrics_listen;
    // The policy's [notify] channels hear about failures (and what else it
    // asks for); they are read at start-up, not on SIGHUP.
    let mut sinks = sinks;
    sinks.push(Arc::new(crate::backup::notifier::Notifier::for_policy(
        &policy,
        Some(metrics.clone()),
    )));
    let mut sched = Scheduler::new(policy, store, Arc::new(SystemClock), metrics);
    for s in sinks {
        sched.add_sink(s);
    }
    let (ctl, rx) = mpsc::channel(4);
    let signals = tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGHUP; reload needs a restart");
                stop.cancelled().await;
                let _ = ctl.send(Control::Stop).await;
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    tracing::info!("stop requested");
                    let _ = ctl.send(Control::Stop).await;
                    return;
                }
                _ = hup.recv() => {
                    match Policy::load(&policy_file) {
                        Err(e) => tracing::error!(error = %one_line(&e), "reload rejected: the new policy is invalid; the old one keeps running"),
                        Ok(p) => {
                            if p.daemon.metrics_listen != listen {
                                tracing::warn!("metrics-listen changed: takes effect at the next restart");
                            }
                            match crate::store::build(&p.store).await {
                                Ok(s) => { let _ = ctl.send(Control::Reload(Box::new(p), s)).await; }
                                Err(e) => tracing::error!(error = %one_line(&e), "reload rejected: the new store cannot be opened"),
                            }
                        }
                    }
                }
            }
        }
    });
    let res = sched.run(rx).await;
    signals.abort();
    serving.cancel();
    res
}
