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

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backup::catalog::Catalog;
use crate::backup::job::{self, JobEnv, Sinks};
use crate::backup::lease;
use crate::backup::metrics::Metrics;
use crate::backup::policy::{Job, Policy};
use crate::error::{one_line, Error, Result};
use crate::store::DynStore;

pub use crate::backup::job::{Clock, Event, EventSink, SystemClock};

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
    /// The job's drill, not its backup.
    drill: bool,
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
                    // Drills and backups of a job are kept apart by its
                    // lease (a drill waits for a running backup).
                    let key = if t.drill { format!("drill:{}", job.name) } else { job.name.clone() };
                    if running.contains(&key) {
                        self.emit(Event::Skipped { job: job.name.clone(), slot: t.slot, reason: format!("the previous {} is still going", if t.drill { "drill" } else { "run" }) }).await;
                        continue;
                    }
                    running.insert(key.clone());
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
                    let drill = t.drill;
                    runs.spawn(async move {
                        if drill {
                            ctx.drill(job, t.slot).await;
                        } else {
                            ctx.run(job, t.slot).await;
                        }
                        key
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
        let backups = self
            .policy
            .jobs
            .iter()
            .filter_map(|j| j.schedule.clone().map(|s| (j, s, false)));
        let drills = self
            .policy
            .jobs
            .iter()
            .filter_map(|j| j.drill.as_ref().map(|d| (j, d.schedule.clone(), true)));
        for (job, schedule, drill) in backups.chain(drills).collect::<Vec<_>>() {
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
                                drill,
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
                    drill: false,
                });
            }
        }
    }

    async fn refresh_metrics(&self) {
        job::refresh(&self.store, &self.metrics).await
    }

    async fn emit(&self, e: Event) {
        Sinks {
            sinks: self.sinks.clone(),
            wait: false,
        }
        .emit(e)
        .await
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
    fn env(&self) -> JobEnv {
        JobEnv {
            policy: self.policy.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            sinks: Sinks {
                sinks: self.sinks.clone(),
                wait: false,
            },
            clock: self.clock.clone(),
            lease_ttl: self.lease_ttl,
            prune: self.policy.daemon.prune,
            identities: None,
            progress: crate::base::progress::silent(),
        }
    }

    /// Jitter, then a free slot; false when stopping meanwhile.
    async fn wait_turn(&self, job: &Job) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let jitter = job.jitter.unwrap_or(self.policy.daemon.jitter);
        if !jitter.is_zero() {
            let d = Duration::from_millis(rand::random::<u64>() % jitter.as_millis().max(1) as u64);
            tokio::select! {
                _ = self.stopping.cancelled() => return None,
                _ = tokio::time::sleep(d) => {}
            }
        }
        let permit = tokio::select! {
            _ = self.stopping.cancelled() => return None,
            p = self.sem.clone().acquire_owned() => p.expect("semaphore open"),
        };
        if self.stopping.is_cancelled() {
            return None;
        }
        Some(permit)
    }

    async fn run(self, job: Job, slot: DateTime<Utc>) {
        let Some(_permit) = self.wait_turn(&job).await else {
            return;
        };
        job::run_job(&self.env(), &job, slot, self.abort.clone()).await;
    }

    /// A drill waits (up to a day) for the job's lease: a backup running at
    /// the drill's slot delays it, never skips it.
    async fn drill(self, job: Job, slot: DateTime<Utc>) {
        let Some(_permit) = self.wait_turn(&job).await else {
            return;
        };
        let env = self.env();
        let give_up = tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
        loop {
            tracing::info!(job = %job.name, slot = %slot, "drill started");
            let out = job::drill_job(&env, &job, self.abort.clone()).await;
            match &out.record {
                Err(e)
                    if matches!(e.root(), Error::Locked { .. })
                        && tokio::time::Instant::now() < give_up
                        && !self.stopping.is_cancelled() =>
                {
                    tokio::select! {
                        _ = self.stopping.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                }
                Err(e) if matches!(e.root(), Error::Locked { .. }) => {
                    self.metrics.drill_done(&job.name, false, 0.0);
                    env.sinks
                        .emit(Event::DrillFailed {
                            job: job.name.clone(),
                            error: one_line(e),
                        })
                        .await;
                    return;
                }
                _ => return,
            }
        }
    }
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
