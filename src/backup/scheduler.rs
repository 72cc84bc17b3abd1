//! The daemon's scheduler: every job on its cron schedule, at most
//! `max-parallel` at once, each run under the job's store lease (backup,
//! then prune), events to sinks (logs, notifications), metrics. Beside the
//! runs, one binlog archiver per mysql job that has a `binlog` table, each
//! under the job's binlog lease (the one `cexdr binlog archive` takes),
//! restarted with backoff when it fails, following reloads, stopped at
//! shutdown with its open segment closed.
//!
//! Time comes from an injected `Clock`, so tests drive it with tokio's
//! paused clock. A ticker computes its next slot strictly after the time
//! it fired, so a wall-clock jump backwards never runs a slot twice and a
//! jump forwards runs the missed slot once; it sleeps at most a minute at a
//! time so that jumps are noticed.
use std::collections::{BTreeMap, HashSet};
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
use crate::backup::pitr as binlog;
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
    /// An incremental backup (the job's `incremental` schedule).
    incremental: bool,
}

pub struct Scheduler {
    policy: Arc<Policy>,
    store: DynStore,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    sinks: Vec<Arc<dyn EventSink>>,
    lease_ttl: Duration,
    heartbeat: Duration,
}

/// How often the scheduler loop ticks for `/healthz` when nothing else
/// wakes it.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Marks the scheduler ended in the metrics however its loop ends.
struct Ended(Metrics);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.scheduler_ended(std::thread::panicking())
    }
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
            heartbeat: HEARTBEAT,
        }
    }

    /// How often the loop ticks (`HEARTBEAT`; tests shorten it).
    pub fn set_heartbeat(&mut self, every: Duration) {
        self.heartbeat = every;
    }

    pub fn add_sink(&mut self, sink: Arc<dyn EventSink>) {
        self.sinks.push(sink);
    }

    /// Runs until `Control::Stop` (or the control channel closes).
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) -> Result<()> {
        self.metrics.scheduler_starting();
        let _ended = Ended(self.metrics.clone());
        let (tx, mut triggers) = mpsc::unbounded_channel::<Trigger>();
        let mut work = self.start(tx).await;

        // `/healthz` is healthy while this loop ticks: a loop that no longer
        // turns (blocked in an await, a starved runtime) stops ticking.
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => self.metrics.scheduler_ticked(self.heartbeat),
                msg = control.recv() => match msg {
                    Some(Control::Reload(p, store)) => self.reload(*p, store, &mut work),
                    Some(Control::Stop) | None => break,
                },
                Some(t) = triggers.recv() => self.trigger(t, &mut work).await,
                Some(done) = work.runs.join_next() => work.finished(done),
            }
        }
        self.stop(work).await;
        Ok(())
    }

    /// Metrics, archivers, tickers and the catch-up runs of the first
    /// policy.
    async fn start(&self, tx: mpsc::UnboundedSender<Trigger>) -> Work {
        let stopping = CancellationToken::new();
        let abort = CancellationToken::new();
        let sem = Arc::new(Semaphore::new(self.policy.daemon.max_parallel));
        self.metrics.set_policy(&self.policy, self.clock.now());
        self.refresh_metrics().await;
        let mut archivers = Archivers::default();
        archivers.sync(&self.policy, &self.store, &self.metrics);

        let tickers = self.start_tickers(&tx);
        self.catch_up(&tx).await;
        tracing::info!(jobs = self.policy.jobs.len(), max_parallel = self.policy.daemon.max_parallel, timezone = %self.policy.daemon.timezone, "scheduler started");
        Work {
            tx,
            tickers,
            running: HashSet::new(),
            runs: JoinSet::new(),
            sem,
            stopping,
            abort,
            archivers,
        }
    }

    /// A new policy (SIGHUP): new tickers and archivers; running runs keep
    /// the policy they started with.
    fn reload(&mut self, p: Policy, store: DynStore, work: &mut Work) {
        work.tickers.cancel();
        if p.daemon.max_parallel != self.policy.daemon.max_parallel {
            work.sem = Arc::new(Semaphore::new(p.daemon.max_parallel));
        }
        self.policy = Arc::new(p);
        self.store = store;
        self.metrics.set_policy(&self.policy, self.clock.now());
        work.archivers
            .sync(&self.policy, &self.store, &self.metrics);
        work.tickers = self.start_tickers(&work.tx);
        tracing::info!(file = %self.policy.file.display(), jobs = self.policy.jobs.len(), "policy reloaded");
    }

    /// A slot fired: its run (or drill) is spawned, or skipped while the
    /// previous one still goes.
    async fn trigger(&self, t: Trigger, work: &mut Work) {
        let Some(mut job) = self.policy.jobs.iter().find(|j| j.name == t.job).cloned() else {
            return; // removed by a reload
        };
        if t.incremental {
            // Same key as the full: one backup of a job at a time.
            match job::incremental(&job) {
                Ok(j) => job = j,
                Err(e) => {
                    tracing::error!(job = %job.name, error = %one_line(&e), "incremental schedule on a job that cannot take incrementals");
                    return;
                }
            }
        }
        // Drills and backups of a job are kept apart by its
        // lease (a drill waits for a running backup).
        let key = if t.drill {
            format!("drill:{}", job.name)
        } else {
            job.name.clone()
        };
        if work.running.contains(&key) {
            self.emit(Event::Skipped {
                job: job.name.clone(),
                slot: t.slot,
                reason: format!(
                    "the previous {} is still going",
                    if t.drill { "drill" } else { "run" }
                ),
            })
            .await;
            return;
        }
        work.running.insert(key.clone());
        let ctx = RunCtx {
            policy: self.policy.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            sinks: self.sinks.clone(),
            lease_ttl: self.lease_ttl,
            sem: work.sem.clone(),
            stopping: work.stopping.clone(),
            abort: work.abort.clone(),
        };
        let drill = t.drill;
        work.runs.spawn(async move {
            if drill {
                ctx.drill(job, t.slot).await;
            } else {
                ctx.run(job, t.slot).await;
            }
            key
        });
    }

    /// Graceful stop: no new runs; running ones get the grace period,
    /// and so do the archivers to close their open segments.
    async fn stop(&self, mut work: Work) {
        self.metrics.scheduler_stopping();
        work.tickers.cancel();
        work.stopping.cancel();
        work.archivers.stop();
        let (runs, archivers) = (&mut work.runs, &mut work.archivers);
        let grace = self.policy.daemon.shutdown_grace;
        if !runs.is_empty() {
            tracing::info!(
                running = runs.len(),
                grace_seconds = grace.as_secs(),
                "stopping: waiting for running jobs"
            );
        }
        let drained = tokio::time::timeout(grace, async {
            while runs.join_next().await.is_some() {}
            while archivers.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                running = runs.len(),
                "grace period over: stopping running jobs (uploads aborted, nothing listed)"
            );
            work.abort.cancel();
            if !archivers.tasks.is_empty() {
                tracing::warn!(
                    archivers = archivers.tasks.len(),
                    "grace period over: stopping binlog archivers (their open segments are read again at the next start)"
                );
                archivers.tasks.abort_all();
            }
            while runs.join_next().await.is_some() {}
            while archivers.tasks.join_next().await.is_some() {}
        }
        tracing::info!("scheduler stopped");
    }

    fn start_tickers(&self, tx: &mpsc::UnboundedSender<Trigger>) -> CancellationToken {
        let stop = CancellationToken::new();
        let jobs = || self.policy.jobs.iter();
        let backups = jobs().filter_map(|j| j.schedule.clone().map(|s| (j, s, false, false)));
        let incrementals =
            jobs().filter_map(|j| j.incremental.clone().map(|s| (j, s, false, true)));
        let drills = jobs().filter_map(|j| {
            j.drill
                .as_ref()
                .map(|d| (j, d.schedule.clone(), true, false))
        });
        let all: Vec<_> = backups.chain(incrementals).chain(drills).collect();
        for (job, schedule, drill, incremental) in all {
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
                                incremental,
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
                    incremental: false,
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

/// What the scheduler loop has started and must stop: tickers, runs and
/// archivers, and the tokens that stop the runs.
struct Work {
    /// The tickers' side of the trigger channel (kept for new tickers at
    /// a reload).
    tx: mpsc::UnboundedSender<Trigger>,
    tickers: CancellationToken,
    /// The keys (job, or `drill:job`) of the runs that still go.
    running: HashSet<String>,
    runs: JoinSet<String>,
    sem: Arc<Semaphore>,
    stopping: CancellationToken,
    abort: CancellationToken,
    archivers: Archivers,
}

impl Work {
    /// A run task ended: its key is free again.
    fn finished(&mut self, done: std::result::Result<String, tokio::task::JoinError>) {
        match done {
            Ok(name) => {
                self.running.remove(&name);
            }
            Err(e) => tracing::error!(error = %e, "a run task panicked"),
        }
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

// ---------------------------------------------------------------- binlog archivers

/// Waiting for another process's binlog lease: how often to try again.
const LEASE_RETRY: Duration = Duration::from_secs(5);
/// Restart delays of a failed archiver: doubling from the first to the last.
const RESTART_FIRST: Duration = Duration::from_secs(5);
const RESTART_MAX: Duration = Duration::from_secs(300);
/// An archiver that ran this long before failing starts the backoff anew.
const RESTART_RESET: Duration = Duration::from_secs(600);

/// What an archiver is built from: when it changes at a reload, the
/// archiver is restarted.
#[derive(PartialEq)]
struct ArchiverKey {
    mysql: crate::backup::source::mysql::MysqlSpec,
    compression: crate::pipeline::Compression,
    encryption: Option<crate::pipeline::encrypt::EncryptionSpec>,
    store: crate::store::StoreSpec,
    signing_key_file: Option<std::path::PathBuf>,
}

impl ArchiverKey {
    fn of(policy: &Policy, job: &Job) -> Option<ArchiverKey> {
        let crate::backup::source::kinds::SourceSpec::Mysql(m) = &job.source else {
            return None;
        };
        m.binlog.as_ref()?;
        Some(ArchiverKey {
            mysql: m.clone(),
            compression: job.compression,
            encryption: job.encryption.clone(),
            store: policy.store.clone(),
            signing_key_file: policy.signing_key_file.clone(),
        })
    }
}

struct Supervised {
    key: ArchiverKey,
    cancel: CancellationToken,
    /// Cancelled when its task has ended (a replacement waits for it, so
    /// that it never meets its predecessor's lease).
    done: CancellationToken,
}

/// The daemon's binlog archivers, one per mysql job with a `binlog` table.
#[derive(Default)]
struct Archivers {
    by_job: BTreeMap<String, Supervised>,
    tasks: JoinSet<()>,
}

impl Archivers {
    /// Starts, restarts (changed) and stops (removed) archivers to match
    /// `policy`.
    fn sync(&mut self, policy: &Arc<Policy>, store: &DynStore, metrics: &Metrics) {
        // Forget the tasks of archivers stopped at earlier reloads.
        while self.tasks.try_join_next().is_some() {}
        let wanted: BTreeMap<String, (Job, ArchiverKey)> = policy
            .jobs
            .iter()
            .filter_map(|j| ArchiverKey::of(policy, j).map(|k| (j.name.clone(), (j.clone(), k))))
            .collect();
        let gone: Vec<String> = self
            .by_job
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            let s = self.by_job.remove(&name).expect("listed");
            tracing::info!(job = %name, "binlog archiver: the job (or its binlog table) left the policy; stopping its archiver");
            s.cancel.cancel();
            metrics.binlog_forget(&name);
        }
        for (name, (job, key)) in wanted {
            let before = match self.by_job.remove(&name) {
                Some(s) if s.key == key => {
                    self.by_job.insert(name, s);
                    continue;
                }
                Some(s) => {
                    tracing::info!(job = %name, "binlog archiver: the job changed; restarting its archiver");
                    s.cancel.cancel();
                    Some(s.done)
                }
                None => None,
            };
            let (cancel, done) = (CancellationToken::new(), CancellationToken::new());
            let sup = Supervisor {
                job,
                policy: policy.clone(),
                store: store.clone(),
                stats: metrics.binlog_stats(&name),
                metrics: metrics.clone(),
                cancel: cancel.clone(),
            };
            let guard = done.clone().drop_guard();
            self.tasks.spawn(async move {
                let _guard = guard;
                if let Some(b) = before {
                    b.cancelled().await;
                }
                sup.run().await
            });
            self.by_job.insert(name, Supervised { key, cancel, done });
        }
    }

    /// Asks every archiver to stop (each closes its open segment and
    /// releases its lease); the caller waits for `tasks`.
    fn stop(&mut self) {
        for s in self.by_job.values() {
            s.cancel.cancel();
        }
    }
}

/// Runs one job's archiver until cancelled: waits while another process
/// holds the job's binlog lease, restarts it with backoff when it fails.
struct Supervisor {
    job: Job,
    policy: Arc<Policy>,
    store: DynStore,
    stats: Arc<crate::backup::binlog::archive::Stats>,
    metrics: Metrics,
    cancel: CancellationToken,
}

impl Supervisor {
    async fn run(self) {
        let name = self.job.name.clone();
        let mut backoff = RESTART_FIRST;
        let mut waiting = false;
        tracing::info!(job = %name, "binlog archiver started");
        while !self.cancel.is_cancelled() {
            let t0 = tokio::time::Instant::now();
            let res = match self.policy.signer() {
                Ok(signer) => {
                    let cat = Catalog::new(self.store.clone()).with_signer(signer);
                    binlog::archive(
                        &cat,
                        &self.job,
                        binlog::LEASE_TTL,
                        self.stats.clone(),
                        None,
                        self.cancel.clone(),
                    )
                    .await
                }
                Err(e) => Err(e.in_job(&name)),
            };
            if self.cancel.is_cancelled() {
                break;
            }
            let wait = match res {
                Err(e) if matches!(e.root(), Error::Locked { .. }) => {
                    // Another daemon or a standalone `cexdr binlog archive`
                    // archives this job; it reports the metrics meanwhile.
                    self.metrics.binlog_failed(&name, None);
                    if !waiting {
                        tracing::warn!(job = %name, error = %one_line(&e), retry_s = LEASE_RETRY.as_secs(), "binlog archiver: another process holds the job's binlog lease; waiting for it");
                        waiting = true;
                    } else {
                        tracing::debug!(job = %name, error = %one_line(&e), "binlog archiver: still waiting for the lease");
                    }
                    LEASE_RETRY
                }
                res => {
                    waiting = false;
                    let e = res.err().unwrap_or_else(|| {
                        Error::source_err(&name, "the binlog archiver ended by itself")
                    });
                    if t0.elapsed() >= RESTART_RESET {
                        backoff = RESTART_FIRST;
                    }
                    self.metrics.binlog_failed(&name, Some(Utc::now()));
                    tracing::error!(job = %name, error = %one_line(&e), retry_in_s = backoff.as_secs(), "binlog archiver failed; restarting it");
                    let b = backoff;
                    backoff = (backoff * 2).min(RESTART_MAX);
                    b
                }
            };
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(job = %name, "binlog archiver stopped");
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
