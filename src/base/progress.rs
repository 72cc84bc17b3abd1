//! Progress of long operations (backup, restore, verify). The library only
//! reports through `Progress`; the caller decides what to show: the command
//! line draws a progress line on a terminal, logs `Logged` events in JSON
//! log mode, or passes `silent()`. Nothing here writes to a terminal.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use crate::base::ByteStream;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Rows,
}

/// How much there is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// Not known (a first backup): show what is done and the rate, no ETA.
    Unknown,
    /// An estimate (a backup: the previous backup's size); may be off.
    About(u64),
    /// Known exactly (restore and verify read what the manifest lists).
    Exact(u64),
}

impl Total {
    pub fn value(self) -> Option<u64> {
        match self {
            Total::Unknown => None,
            Total::About(n) | Total::Exact(n) => Some(n),
        }
    }
}

/// Receives the progress of one operation at a time: `start`, any number of
/// `advance` (from any thread), then `finish`.
pub trait Progress: Send + Sync {
    /// A new operation: `what` names it ("restore 2026…"), `total` says how
    /// much there is to do.
    fn start(&self, what: &str, total: Total, unit: Unit);
    /// The total turned out different from what `start` said (a MySQL
    /// restore reads its artifact once per connection).
    fn set_total(&self, total: Total);
    /// `n` more units done.
    fn advance(&self, n: u64);
    /// The operation ended: `ok` is false when it failed or was interrupted.
    fn finish(&self, ok: bool);
    /// False when nothing listens: callers skip work done only to report
    /// (such as estimating a total).
    fn enabled(&self) -> bool {
        true
    }
}

pub type DynProgress = Arc<dyn Progress>;

/// Reports nowhere.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: Total, _: Unit) {}
    fn set_total(&self, _: Total) {}
    fn advance(&self, _: u64) {}
    fn finish(&self, _: bool) {}
    fn enabled(&self) -> bool {
        false
    }
}

pub fn silent() -> DynProgress {
    Arc::new(Silent)
}

/// One operation in progress; reports `finish(false)` when dropped without
/// `done()`, so that every early return and `?` ends it.
pub struct Task {
    progress: DynProgress,
    finished: bool,
}

/// Starts an operation on `progress`.
pub fn begin(progress: &DynProgress, what: &str, total: Total, unit: Unit) -> Task {
    progress.start(what, total, unit);
    Task {
        progress: progress.clone(),
        finished: false,
    }
}

impl Task {
    /// The operation succeeded.
    pub fn done(mut self) {
        self.finished = true;
        self.progress.finish(true);
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if !self.finished {
            self.progress.finish(false);
        }
    }
}

/// Passes `input` through, reporting the length of every chunk.
pub fn counted(input: ByteStream, progress: DynProgress) -> ByteStream {
    if !progress.enabled() {
        return input;
    }
    Box::pin(input.inspect(move |r| {
        if let Ok(b) = r {
            progress.advance(b.len() as u64);
        }
    }))
}

/// A snapshot of an operation, as `Logged` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub what: String,
    pub unit: Unit,
    pub done: u64,
    pub total: Total,
    pub elapsed: Duration,
}

impl Snapshot {
    /// Units per second since the start.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.done as f64 / s
        } else {
            0.0
        }
    }

    /// Percent done, when there is a total (capped at 100: estimates may be low).
    pub fn percent(&self) -> Option<f64> {
        match self.total.value() {
            Some(0) => Some(100.0),
            Some(t) => Some((self.done as f64 * 100.0 / t as f64).min(100.0)),
            None => None,
        }
    }

    /// Seconds left at the average rate so far, when there is a total.
    pub fn eta(&self) -> Option<Duration> {
        let t = self.total.value()?;
        let rate = self.rate();
        if rate <= 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64(
            t.saturating_sub(self.done) as f64 / rate,
        ))
    }
}

struct Running {
    what: String,
    unit: Unit,
    total: Total,
    done: u64,
    started: tokio::time::Instant,
    last: tokio::time::Instant,
}

type Sink = Box<dyn Fn(&Snapshot) + Send + Sync>;

/// Reports a snapshot at most every `every` while an operation runs, none
/// for one that ends sooner: long runs in JSON log mode, where a drawn line
/// would only garble the log. Uses tokio's clock (paused in tests).
pub struct Logged {
    every: Duration,
    sink: Sink,
    running: Mutex<Option<Running>>,
}

impl Logged {
    /// Logs an info event `progress` with `what`, `unit`, `done`, `total`,
    /// `percent`, `rate_per_second` and `eta_seconds` fields.
    pub fn tracing(every: Duration) -> Self {
        Self::with_sink(every, log_snapshot)
    }

    /// Hands each snapshot to `sink`.
    pub fn with_sink(every: Duration, sink: impl Fn(&Snapshot) + Send + Sync + 'static) -> Self {
        Logged {
            every,
            sink: Box::new(sink),
            running: Mutex::new(None),
        }
    }
}

fn log_snapshot(s: &Snapshot) {
    tracing::info!(
        what = %s.what,
        unit = match s.unit { Unit::Bytes => "bytes", Unit::Rows => "rows" },
        done = s.done,
        total = s.total.value(),
        estimated = matches!(s.total, Total::About(_)),
        percent = s.percent().map(|p| (p * 10.0).round() / 10.0),
        rate_per_second = s.rate().round() as u64,
        eta_seconds = s.eta().map(|d| d.as_secs()),
        "progress"
    );
}

impl Progress for Logged {
    fn start(&self, what: &str, total: Total, unit: Unit) {
        let now = tokio::time::Instant::now();
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
            what: what.to_owned(),
            unit,
            total,
            done: 0,
            started: now,
            last: now,
        });
    }

    fn set_total(&self, total: Total) {
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            r.total = total;
        }
    }

    fn advance(&self, n: u64) {
        let mut g = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = g.as_mut() else { return };
        r.done = r.done.saturating_add(n);
        let now = tokio::time::Instant::now();
        if now.duration_since(r.last) < self.every {
            return;
        }
        r.last = now;
        let snap = Snapshot {
            what: r.what.clone(),
            unit: r.unit,
            done: r.done,
            total: r.total,
            elapsed: now.duration_since(r.started),
        };
        drop(g);
        (self.sink)(&snap);
    }

    fn finish(&self, _ok: bool) {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
