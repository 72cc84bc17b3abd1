//! Prometheus metrics: kept in memory by the daemon and served on
//! `/metrics`, or written once to a node_exporter textfile
//! (`--metrics-file`) by one-shot commands. Catalog-derived values (last
//! success, sizes, verification) are refreshed from the catalog, so they
//! survive restarts and are the same whichever host ran the backup.
//!
//! The job label is `cexdr_job`, not `job`: Prometheus sets `job` on every
//! scraped series (the scrape job) and would rename ours to `exported_job`.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::backup::binlog::archive::Stats;
use crate::backup::catalog::{Entry, Manifest, Status};
use crate::backup::policy::{DaemonSpec, Policy};
use crate::error::{Error, Result};

#[derive(Debug, Default, Clone)]
struct JobMetrics {
    last_success: Option<DateTime<Utc>>,
    last_failure: Option<DateTime<Utc>>,
    last_duration: Option<f64>,
    source_bytes: Option<u64>,
    stored_bytes: Option<u64>,
    runs_total: u64,
    failures_total: u64,
    prune_errors_total: u64,
    running: bool,
    interval_seconds: Option<f64>,
    catalog_backups: u64,
    catalog_stored_bytes: u64,
    last_verification: Option<DateTime<Utc>>,
    last_verification_ok: Option<bool>,
    /// Newest passed verification per level (`checksum`, `restore-test`).
    last_success_by_level: BTreeMap<&'static str, DateTime<Utc>>,
    /// Measured restore time of the newest passed restore test.
    last_drill_seconds: Option<f64>,
    /// Backups whose latest verification failed.
    failed_backups: u64,
    read_back_failures_total: u64,
    drill_failures_total: u64,
    drills_total: u64,
    drill_configured: bool,
}

#[derive(Debug, Default)]
struct State {
    jobs: BTreeMap<String, JobMetrics>,
    started: Option<DateTime<Utc>>,
    catalog_refresh_errors: u64,
    /// Failed notification deliveries, by channel.
    notification_failures: BTreeMap<String, u64>,
    /// Per-job output only (no process-wide series).
    jobs_only: bool,
    /// For `/report`: the policy and the catalog as last read.
    policy: Option<Policy>,
    report: crate::backup::report::Input,
    /// The daemon's binlog archivers, by job.
    binlog: BTreeMap<String, Archiver>,
}

/// One daemon archiver: its counters (kept across restarts, so they only
/// grow) and whether it failed.
#[derive(Debug)]
struct Archiver {
    stats: Arc<Stats>,
    /// When it last failed (it is waiting to be restarted); None otherwise.
    failed_at: Option<DateTime<Utc>>,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
    /// Apart from the metrics' lock, so that `/healthz` answers even while
    /// something holds that one.
    health: Arc<Mutex<Health>>,
}

/// The daemon scheduler's loop, as `/healthz` reports it.
#[derive(Debug, Default)]
struct Health {
    phase: Phase,
    /// When the loop last ticked (monotonic: a wall-clock jump is no stall).
    last_tick: Option<tokio::time::Instant>,
    /// How often it ticks.
    every: std::time::Duration,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Phase {
    /// No scheduler in this process.
    #[default]
    None,
    /// Reading the catalog (metrics, catch-up) before its first tick.
    Starting,
    Running,
    /// Stopped at shutdown; waiting for running jobs.
    Stopping,
    Stopped,
    Panicked,
}

/// The scheduler loop counts as stuck when it missed this many ticks.
pub const STALE_TICKS: u32 = 6;

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().expect("metrics lock"))
    }

    fn health_with<R>(&self, f: impl FnOnce(&mut Health) -> R) -> R {
        f(&mut self.health.lock().expect("health lock"))
    }

    /// The daemon's scheduler started: it reads the catalog before it ticks.
    pub fn scheduler_starting(&self) {
        self.health_with(|h| h.phase = Phase::Starting)
    }

    /// The scheduler loop is turning: it ticks every `every`.
    pub fn scheduler_ticked(&self, every: std::time::Duration) {
        self.health_with(|h| {
            h.phase = Phase::Running;
            h.last_tick = Some(tokio::time::Instant::now());
            h.every = every;
        })
    }

    /// The scheduler stopped starting runs (shutdown).
    pub fn scheduler_stopping(&self) {
        self.health_with(|h| h.phase = Phase::Stopping)
    }

    /// The scheduler loop ended (returned, or unwound from a panic).
    pub fn scheduler_ended(&self, panicked: bool) {
        self.health_with(|h| {
            h.phase = if panicked {
                Phase::Panicked
            } else {
                Phase::Stopped
            }
        })
    }

    /// `/healthz`: Ok while the scheduler loop runs and ticked within
    /// `STALE_TICKS` of its ticks; otherwise why not.
    pub fn health(&self) -> std::result::Result<(), String> {
        self.health_with(|h| match h.phase {
            Phase::None => Err("no scheduler runs in this process".into()),
            Phase::Starting => {
                Err("the scheduler is starting (reading the catalog before its first tick)".into())
            }
            Phase::Stopping => {
                Err("the scheduler is stopping (waiting for running jobs to end)".into())
            }
            Phase::Stopped => Err("the scheduler has stopped".into()),
            Phase::Panicked => Err("the scheduler loop panicked".into()),
            Phase::Running => {
                let age = h.last_tick.map(|t| t.elapsed()).unwrap_or_default();
                if age > h.every * STALE_TICKS {
                    Err(format!(
                        "the scheduler loop is stuck: its last tick was {} s ago (it ticks every {} s)",
                        seconds(age),
                        seconds(h.every)
                    ))
                } else {
                    Ok(())
                }
            }
        })
    }

    /// Declares the policy's jobs (so that every job has series, even before
    /// its first run) and their schedule intervals; forgets removed jobs.
    pub fn set_policy(&self, policy: &Policy, now: DateTime<Utc>) {
        self.with(|s| {
            s.started.get_or_insert(now);
            s.jobs
                .retain(|name, _| policy.jobs.iter().any(|j| &j.name == name));
            for j in &policy.jobs {
                let m = s.jobs.entry(j.name.clone()).or_default();
                m.interval_seconds = policy.schedule_interval(j, now);
                m.drill_configured = j.drill.is_some();
            }
            s.policy = Some(policy.clone());
        })
    }

    /// Keeps only these jobs' series, and no process-wide ones: a one-shot
    /// run writes the jobs it ran, so that per-job textfiles never repeat a
    /// series (node_exporter rejects duplicates across files).
    pub fn retain_jobs(&self, jobs: &[String]) {
        self.with(|s| {
            s.jobs.retain(|name, _| jobs.contains(name));
            s.jobs_only = true;
        })
    }

    pub fn started(&self, job: &str) {
        self.with(|s| s.jobs.entry(job.into()).or_default().running = true)
    }

    pub fn succeeded(&self, m: &Manifest, seconds: f64) {
        self.with(|s| {
            let j = s.jobs.entry(m.job.clone()).or_default();
            j.running = false;
            j.runs_total += 1;
            j.last_success = Some(m.finished_at);
            j.last_duration = Some(seconds);
            j.source_bytes = Some(m.source_bytes);
            j.stored_bytes = Some(m.stored_bytes);
        })
    }

    pub fn failed(&self, job: &str, at: DateTime<Utc>, seconds: f64) {
        self.with(|s| {
            let j = s.jobs.entry(job.into()).or_default();
            j.running = false;
            j.runs_total += 1;
            j.failures_total += 1;
            j.last_failure = Some(at);
            j.last_duration = Some(seconds);
        })
    }

    /// A run that did not happen (locked elsewhere, interrupted at stop).
    pub fn not_run(&self, job: &str) {
        self.with(|s| s.jobs.entry(job.into()).or_default().running = false)
    }

    /// The read-back after a backup found the stored object damaged.
    pub fn read_back_failed(&self, job: &str) {
        self.with(|s| {
            s.jobs
                .entry(job.into())
                .or_default()
                .read_back_failures_total += 1
        })
    }

    /// A drill ended (`seconds`: its measured restore time).
    pub fn drill_done(&self, job: &str, ok: bool, seconds: f64) {
        self.with(|s| {
            let j = s.jobs.entry(job.into()).or_default();
            j.drills_total += 1;
            if ok {
                j.last_drill_seconds = Some(seconds);
            } else {
                j.drill_failures_total += 1;
            }
        })
    }

    /// The audit report of the catalog as last read (`/report`).
    pub fn report(&self, now: DateTime<Utc>) -> Option<String> {
        self.with(|s| {
            s.policy
                .as_ref()
                .map(|p| crate::backup::report::html(p, &s.report, now))
        })
    }

    /// Keeps what `/report` draws (read with the catalog metrics).
    pub fn set_report_input(&self, input: crate::backup::report::Input) {
        self.with(|s| s.report = input)
    }

    pub fn job_names(&self) -> Vec<String> {
        self.with(|s| s.jobs.keys().cloned().collect())
    }

    /// The counters of the daemon's archiver of `job` (the same ones
    /// across its restarts).
    pub fn binlog_stats(&self, job: &str) -> Arc<Stats> {
        self.with(|s| {
            s.binlog
                .entry(job.into())
                .or_insert_with(|| Archiver {
                    stats: Arc::new(Stats::default()),
                    failed_at: None,
                })
                .stats
                .clone()
        })
    }

    /// The archiver of `job` failed at `at` (Some) or runs again (None).
    pub fn binlog_failed(&self, job: &str, at: Option<DateTime<Utc>>) {
        self.with(|s| {
            if let Some(a) = s.binlog.get_mut(job) {
                a.failed_at = at;
            }
        })
    }

    /// The job no longer has an archiver (removed from the policy).
    pub fn binlog_forget(&self, job: &str) {
        self.with(|s| {
            s.binlog.remove(job);
        })
    }

    pub fn prune_failed(&self, job: &str) {
        self.with(|s| s.jobs.entry(job.into()).or_default().prune_errors_total += 1)
    }

    pub fn notification_failed(&self, channel: &str) {
        self.with(|s| *s.notification_failures.entry(channel.into()).or_default() += 1)
    }

    pub fn catalog_refresh_failed(&self) {
        self.with(|s| s.catalog_refresh_errors += 1)
    }

    /// Catalog size, newest backup and latest verification per job.
    pub fn refresh_catalog(&self, entries: &[Entry]) {
        self.with(|s| {
            for j in s.jobs.values_mut() {
                j.catalog_backups = 0;
                j.catalog_stored_bytes = 0;
                j.failed_backups = 0;
            }
            for e in entries {
                let m = &e.manifest;
                let j = s.jobs.entry(m.job.clone()).or_default();
                j.catalog_backups += 1;
                j.catalog_stored_bytes += m.stored_bytes;
                if j.last_success.is_none_or(|t| m.finished_at > t) {
                    j.last_success = Some(m.finished_at);
                    j.source_bytes = Some(m.source_bytes);
                    j.stored_bytes = Some(m.stored_bytes);
                    j.last_duration =
                        Some((m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0);
                }
                if let Some(v) = e.latest_verification() {
                    if j.last_verification.is_none_or(|t| v.at > t) {
                        j.last_verification = Some(v.at);
                        j.last_verification_ok = Some(v.status == Status::Ok);
                    }
                    if v.status == Status::Failed {
                        j.failed_backups += 1;
                    }
                }
                for v in e.verifications.iter().filter(|v| v.status == Status::Ok) {
                    let level = crate::backup::catalog::level_of(&v.method);
                    let newer = j.last_success_by_level.get(level).is_none_or(|t| v.at > *t);
                    if newer {
                        j.last_success_by_level.insert(level, v.at);
                        if level == crate::backup::catalog::RESTORE_TESTED {
                            j.last_drill_seconds = v.details["seconds"].as_f64();
                        }
                    }
                }
            }
        })
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.with(|s| {
            let mut out = String::new();
            let ts = |t: &Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis() as f64 / 1000.0);
            type Get = fn(&JobMetrics) -> Option<f64>;
            let series: [(&str, &str, &str, Get); 20] = [
                ("cexdr_backup_last_success_timestamp_seconds", "gauge", "End of the job's newest complete backup (Unix time).", |j| j.last_success.map(|t| t.timestamp_millis() as f64 / 1000.0)),
                ("cexdr_backup_last_failure_timestamp_seconds", "gauge", "Time of the job's last failed run (Unix time; this process's runs only).", |j| j.last_failure.map(|t| t.timestamp_millis() as f64 / 1000.0)),
                ("cexdr_backup_last_duration_seconds", "gauge", "Duration of the job's last run.", |j| j.last_duration),
                ("cexdr_backup_last_source_bytes", "gauge", "Bytes read from the source by the newest backup.", |j| j.source_bytes.map(|b| b as f64)),
                ("cexdr_backup_last_stored_bytes", "gauge", "Bytes stored by the newest backup.", |j| j.stored_bytes.map(|b| b as f64)),
                ("cexdr_backup_runs_total", "counter", "Runs finished by this process.", |j| Some(j.runs_total as f64)),
                ("cexdr_backup_failures_total", "counter", "Failed runs of this process.", |j| Some(j.failures_total as f64)),
                ("cexdr_backup_running", "gauge", "1 while a run of the job is in progress.", |j| Some(if j.running { 1.0 } else { 0.0 })),
                ("cexdr_prune_errors_total", "counter", "Prunes that stopped on a store error.", |j| Some(j.prune_errors_total as f64)),
                ("cexdr_job_schedule_interval_seconds", "gauge", "Longest gap between two scheduled runs of the job.", |j| j.interval_seconds),
                ("cexdr_catalog_backups", "gauge", "Complete backups of the job in the catalog.", |j| Some(j.catalog_backups as f64)),
                ("cexdr_catalog_stored_bytes", "gauge", "Bytes stored by the job's complete backups.", |j| Some(j.catalog_stored_bytes as f64)),
                ("cexdr_verification_last_timestamp_seconds", "gauge", "Time of the newest verification of any of the job's backups.", |j| j.last_verification.map(|t| t.timestamp_millis() as f64 / 1000.0)),
                ("cexdr_verification_last_success", "gauge", "1 if that newest verification passed, 0 if it failed.", |j| j.last_verification_ok.map(|ok| if ok { 1.0 } else { 0.0 })),
                ("cexdr_catalog_verification_failed_backups", "gauge", "Backups of the job whose latest verification failed.", |j| Some(j.failed_backups as f64)),
                ("cexdr_drill_last_duration_seconds", "gauge", "Measured restore time of the job's newest passed restore test (the RTO it proves).", |j| j.last_drill_seconds),
                ("cexdr_read_back_failures_total", "counter", "Backups whose read-back after writing failed (this process).", |j| Some(j.read_back_failures_total as f64)),
                ("cexdr_drills_total", "counter", "Restore drills run by this process.", |j| Some(j.drills_total as f64)),
                ("cexdr_drill_failures_total", "counter", "Restore drills that failed or could not run (this process).", |j| Some(j.drill_failures_total as f64)),
                ("cexdr_job_drill_configured", "gauge", "1 if the job has a drill in the policy.", |j| Some(if j.drill_configured { 1.0 } else { 0.0 })),
            ];
            for (name, kind, help, get) in series {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (job, j) in &s.jobs {
                    if let Some(v) = get(j) {
                        let _ = writeln!(out, "{name}{{cexdr_job=\"{}\"}} {v}", escape(job));
                    }
                }
            }
            let name = "cexdr_verification_last_success_timestamp_seconds";
            let _ = writeln!(out, "# HELP {name} Newest passed verification of the job's backups per level: checksum (read-back, verify) or restore-test (drill, verify --restore-test) (Unix time).\n# TYPE {name} gauge");
            for (job, j) in &s.jobs {
                for (level, t) in &j.last_success_by_level {
                    let _ = writeln!(
                        out,
                        "{name}{{cexdr_job=\"{}\",level=\"{level}\"}} {}",
                        escape(job),
                        t.timestamp_millis() as f64 / 1000.0
                    );
                }
            }
            if s.jobs_only {
                return out;
            }
            // The daemon's archivers (a one-shot textfile never has one; the
            // standalone archiver writes its own).
            render_binlog(s, &mut out, Utc::now());
            if let Some(t) = ts(&s.started) {
                let _ = writeln!(out, "# HELP cexdr_start_time_seconds When this process started (Unix time).\n# TYPE cexdr_start_time_seconds gauge\ncexdr_start_time_seconds {t}");
            }
            let _ = writeln!(out, "# HELP cexdr_catalog_refresh_errors_total Failed catalog reads for metrics.\n# TYPE cexdr_catalog_refresh_errors_total counter\ncexdr_catalog_refresh_errors_total {}", s.catalog_refresh_errors);
            let _ = writeln!(out, "# HELP cexdr_notification_failures_total Notifications that could not be delivered.\n# TYPE cexdr_notification_failures_total counter");
            for (channel, n) in &s.notification_failures {
                let _ = writeln!(out, "cexdr_notification_failures_total{{channel=\"{}\"}} {n}", escape(channel));
            }
            out
        })
    }

    /// Writes the metrics to a node_exporter textfile: a temporary file in
    /// the same directory, renamed into place (the collector never reads a
    /// half-written file).
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp-{:08x}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            rand::random::<u32>()
        ));
        let res = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map_err(|e| Error::io(format!("writing metrics file {}", path.display()), e))
    }
}

/// Series of the daemon's archivers that hold their job's lease
/// (archiving) or failed; one waiting for another process's lease shows
/// none: that process reports the job. A failed one keeps its failure time
/// as its metrics timestamp, so that the archiver-down alert fires.
fn render_binlog(s: &State, out: &mut String, now: DateTime<Utc>) {
    type Sample = (&'static str, &'static str, &'static str, String);
    let mut rows: Vec<(&str, Vec<Sample>)> = Vec::new();
    for (job, a) in &s.binlog {
        let held = a
            .stats
            .lease_held
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1;
        let mut r = a.stats.samples(now);
        match (held, a.failed_at) {
            (true, _) => {}
            (false, Some(t)) => {
                for x in r.iter_mut() {
                    if x.0 == "cexdr_binlog_metrics_timestamp_seconds" {
                        x.3 = t.timestamp().to_string();
                    }
                }
            }
            (false, None) => continue,
        }
        rows.push((job, r));
    }
    // Every family is declared, even without an archiver (as above).
    for (i, (name, kind, help, _)) in Stats::default().samples(now).iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (job, r) in &rows {
            let _ = writeln!(out, "{name}{{cexdr_job=\"{}\"}} {}", escape(job), r[i].3);
        }
    }
}

/// Seconds to the millisecond, without trailing zeros: `0.05`, `42.1`, `10`.
fn seconds(d: std::time::Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How long one connection may take, from accepting it to the end of the
/// answer (a client that sends its request slowly is dropped).
const CONN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `GET /metrics`, `/report` and `/healthz` on `addr` until `stop`;
/// returns the bound address (port 0 picks a free one). HTTP/1 with one
/// request a connection: the connection closes after each answer.
pub async fn serve(
    metrics: Metrics,
    addr: SocketAddr,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("metrics: listening on {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("metrics: local address", e))?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "metrics are served on a non-loopback address");
    }
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(false)
        .title_case_headers(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(CONN_TIMEOUT)
        .max_buf_size(16 * 1024);
    let task = tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = stop.cancelled() => return,
                c = listener.accept() => c,
            };
            let Ok((sock, peer)) = conn else { continue };
            let m = metrics.clone();
            let service = hyper::service::service_fn(move |req| {
                let m = m.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &m)) }
            });
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(sock), service);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut conn = std::pin::pin!(conn);
                let served = tokio::time::timeout(CONN_TIMEOUT, async {
                    tokio::select! {
                        r = conn.as_mut() => r,
                        // At the daemon's stop a request being answered is
                        // finished; the connection then closes.
                        _ = stop.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            conn.as_mut().await
                        }
                    }
                })
                .await;
                if let Ok(Err(e)) = served {
                    tracing::debug!(%peer, error = %e, "metrics: connection failed");
                }
            });
        }
    });
    Ok((bound, task))
}

type Body = http_body_util::Full<bytes::Bytes>;

fn answer<B>(req: &hyper::Request<B>, m: &Metrics) -> hyper::Response<Body> {
    use hyper::StatusCode;
    let text = "text/plain; charset=utf-8";
    let (status, ctype, body) = if req.method() != hyper::Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        )
    } else {
        match req.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                m.render(),
            ),
            "/report" => match m.report(Utc::now()) {
                Some(html) => (StatusCode::OK, "text/html; charset=utf-8", html),
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "the catalog has not been read yet\n".into(),
                ),
            },
            "/healthz" => match m.health() {
                Ok(()) => (StatusCode::OK, text, "ok\n".into()),
                Err(why) => (StatusCode::SERVICE_UNAVAILABLE, text, format!("{why}\n")),
            },
            "/" => (
                StatusCode::OK,
                text,
                "cexdr daemon: see /metrics, /report and /healthz\n".into(),
            ),
            _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    };
    let mut res = hyper::Response::new(Body::from(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET"),
        );
    }
    res
}

/// Default listen address, for docs and `policy check`.
pub fn default_listen() -> Option<SocketAddr> {
    DaemonSpec::default().metrics_listen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Every phase of the scheduler answers `/healthz` by name; a loop
    /// that missed `STALE_TICKS` ticks is stuck (tokio's clock, paused).
    #[tokio::test(start_paused = true)]
    async fn health_follows_the_scheduler_loop() {
        let m = Metrics::new();
        let why = |m: &Metrics| m.health().unwrap_err();
        assert_eq!(why(&m), "no scheduler runs in this process");
        m.scheduler_starting();
        assert!(why(&m).starts_with("the scheduler is starting"));
        let every = std::time::Duration::from_secs(10);
        m.scheduler_ticked(every);
        assert_eq!(m.health(), Ok(()));
        tokio::time::advance(every * STALE_TICKS).await;
        assert_eq!(m.health(), Ok(()), "exactly STALE_TICKS ticks late");
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        assert_eq!(
            why(&m),
            "the scheduler loop is stuck: its last tick was 61.5 s ago (it ticks every 10 s)"
        );
        m.scheduler_ticked(every);
        assert_eq!(m.health(), Ok(()));
        m.scheduler_stopping();
        assert!(why(&m).starts_with("the scheduler is stopping"));
        m.scheduler_ended(false);
        assert_eq!(why(&m), "the scheduler has stopped");
        m.scheduler_ended(true);
        assert_eq!(why(&m), "the scheduler loop panicked");
    }

    #[test]
    fn daemon_archivers_show_only_when_archiving_or_failed() {
        let m = Metrics::new();
        let now = Utc::now().timestamp();
        let a = m.binlog_stats("a");
        a.lease_held.store(1, Ordering::Relaxed);
        a.connected.store(1, Ordering::Relaxed);
        a.newest_commit.store(now - 100, Ordering::Relaxed);
        a.segments.store(3, Ordering::Relaxed);
        // Waiting for another process's lease: that process reports it.
        m.binlog_stats("b").segments.store(7, Ordering::Relaxed);
        let c = m.binlog_stats("c");
        c.newest_commit.store(now - 50, Ordering::Relaxed);
        let failed = Utc::now() - chrono::Duration::seconds(300);
        m.binlog_failed("c", Some(failed));
        // The same counters across restarts.
        assert!(Arc::ptr_eq(&a, &m.binlog_stats("a")));

        let out = m.render();
        let get = |name: &str, job: &str| {
            let p = format!("{name}{{cexdr_job=\"{job}\"}} ");
            out.lines()
                .find_map(|l| l.strip_prefix(&p))
                .map(|v| v.parse::<f64>().unwrap())
        };
        assert!(
            get("cexdr_binlog_lag_seconds", "a").unwrap() >= 100.0,
            "{out}"
        );
        assert_eq!(get("cexdr_binlog_connected", "a"), Some(1.0));
        assert_eq!(get("cexdr_binlog_segments_total", "a"), Some(3.0));
        assert!(!out.contains("cexdr_job=\"b\""), "{out}");
        assert_eq!(
            get("cexdr_binlog_metrics_timestamp_seconds", "c"),
            Some(failed.timestamp() as f64),
            "{out}"
        );
        assert!(get("cexdr_binlog_lag_seconds", "c").unwrap() >= 50.0);
        assert_eq!(get("cexdr_binlog_connected", "c"), Some(0.0));
        // One HELP/TYPE per family, then its samples.
        assert_eq!(
            out.matches("# TYPE cexdr_binlog_lag_seconds gauge").count(),
            1
        );
        m.binlog_failed("c", None);
        m.binlog_forget("a");
        let out = m.render();
        assert!(!out.contains("cexdr_binlog_lag_seconds{"), "{out}");
        assert!(
            out.contains("# TYPE cexdr_binlog_lag_seconds gauge"),
            "{out}"
        );
    }
}
