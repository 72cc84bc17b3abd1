//! The scheduler under tokio's paused clock: two jobs run on their cron
//! slots and are pruned after each backup; a hanging run is stopped at its
//! timeout and reported; a missed run is caught up once at start.
use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cexdr::backup::catalog::Catalog;
use cexdr::backup::policy::Policy;
use cexdr::backup::scheduler::{Control, Event, EventSink, Scheduler, TokioClock};
use cexdr::store::{self, ByteStream, DynStore, ObjectMeta, Store};
use chrono::{DateTime, Utc};
use common::*;
use tokio::sync::mpsc;

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

#[async_trait]
impl EventSink for Recorder {
    async fn event(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    fn started(&self, job: &str) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::Started { job: j, slot } if j == job => {
                    Some(slot.format("%H:%M").to_string())
                }
                _ => None,
            })
            .collect()
    }
}

fn policy(dir: &Path, extra: &str) -> Policy {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.conf"), "x = 1\n").unwrap();
    let text = format!(
        "{}\n[daemon]\nmax-parallel = 1\nmetrics-listen = \"\"\n{extra}\n\
         [[job]]\nname = \"a\"\nkind = \"files\"\npaths = [\"{src}\"]\nschedule = \"0 * * * *\"\nkeep = {{ last = 2 }}\n\n\
         [[job]]\nname = \"b\"\nkind = \"files\"\npaths = [\"{src}\"]\nschedule = \"30 */2 * * *\"\nkeep = {{ last = 1 }}\n",
        local_store(&dir.join("repo")),
        src = src.display()
    );
    Policy::load(&write_policy(dir, &text)).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn two_jobs_run_on_schedule_and_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), "");
    let store = store::build(&p.store).await.unwrap();
    let rec = Arc::new(Recorder::default());
    let clock = Arc::new(TokioClock::starting_at(at("2026-11-25T01:59:30Z")));
    let metrics = cexdr::backup::metrics::Metrics::new();
    let mut s = Scheduler::new(p, store.clone(), clock, metrics.clone());
    s.add_sink(rec.clone());
    let (ctl, rx) = mpsc::channel(1);
    let task = tokio::spawn(s.run(rx));
    // 01:59:30 -> 06:45:00
    tokio::time::sleep(Duration::from_secs(4 * 3600 + 45 * 60 + 30)).await;
    ctl.send(Control::Stop).await.unwrap();
    task.await.unwrap().unwrap();
    tokio::task::yield_now().await;

    assert_eq!(
        rec.started("a"),
        ["02:00", "03:00", "04:00", "05:00", "06:00"]
    );
    assert_eq!(rec.started("b"), ["02:30", "04:30", "06:30"]);
    let events = rec.events();
    let ok = |job: &str| {
        events
            .iter()
            .filter(|e| matches!(e, Event::Succeeded { job: j, .. } if j == job))
            .count()
    };
    assert_eq!((ok("a"), ok("b")), (5, 3), "{events:?}");
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::Failed { .. } | Event::Skipped { .. } | Event::PruneFailed { .. }
        )),
        "{events:?}"
    );
    // Pruned after each backup: a keeps 2, b keeps 1.
    let removed: usize = events
        .iter()
        .filter_map(|e| match e {
            Event::Pruned { job, report } if job == "a" => Some(report.removed.len()),
            _ => None,
        })
        .sum();
    assert_eq!(removed, 3);
    let catalog = Catalog::new(store.clone());
    assert_eq!(catalog.list(Some("a")).await.unwrap().len(), 2);
    assert_eq!(catalog.list(Some("b")).await.unwrap().len(), 1);
    // Metrics follow.
    let text = metrics.render();
    assert!(
        text.contains("cexdr_backup_runs_total{cexdr_job=\"a\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("cexdr_catalog_backups{cexdr_job=\"a\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("cexdr_job_schedule_interval_seconds{cexdr_job=\"b\"} 7200"),
        "{text}"
    );
}

/// A store whose uploads never finish: a hung run.
struct Hanging(DynStore);

#[async_trait]
impl Store for Hanging {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn preflight(&self) -> cexdr::Result<()> {
        Ok(())
    }
    async fn put(&self, key: &str, mut body: ByteStream) -> cexdr::Result<u64> {
        if key.starts_with(".locks/") {
            return self.0.put(key, body).await;
        }
        // Take every byte (so the producer finishes), then never answer.
        use futures::StreamExt;
        while body.next().await.is_some() {}
        futures::future::pending().await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> cexdr::Result<bool> {
        self.0.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str) -> cexdr::Result<ByteStream> {
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> cexdr::Result<Vec<ObjectMeta>> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> cexdr::Result<()> {
        self.0.delete(key).await
    }
    async fn head(&self, key: &str) -> cexdr::Result<Option<ObjectMeta>> {
        self.0.head(key).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_run_is_stopped_at_its_timeout_and_a_missed_run_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = policy(dir.path(), "catch-up = true");
    p.jobs.retain(|j| j.name == "a");
    p.jobs[0].timeout = Some(Duration::from_secs(600));
    let real = store::build(&p.store).await.unwrap();
    let store: DynStore = Arc::new(Hanging(real.clone()));
    let rec = Arc::new(Recorder::default());
    // Never backed up: the 01:00 slot was missed and runs at start.
    let t0 = tokio::time::Instant::now();
    let clock = Arc::new(TokioClock::starting_at(at("2026-11-25T01:20:00Z")));
    let mut s = Scheduler::new(p, store, clock, cexdr::backup::metrics::Metrics::new());
    s.add_sink(rec.clone());
    let (ctl, rx) = mpsc::channel(1);
    let task = tokio::spawn(s.run(rx));
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    ctl.send(Control::Stop).await.unwrap();
    task.await.unwrap().unwrap();
    tokio::task::yield_now().await;

    assert_eq!(rec.started("a"), ["01:00"], "one catch-up run");
    let failed: Vec<_> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Failed {
                error, timed_out, ..
            } => Some((error, timed_out)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].1 && failed[0].0.contains("timed out after 10m"),
        "{failed:?}"
    );
    assert!(t0.elapsed() >= Duration::from_secs(30 * 60));
    // Nothing listed, nothing left but nothing (the lease is released).
    assert!(
        real.list("").await.unwrap().is_empty(),
        "{:?}",
        real.list("").await.unwrap()
    );
}

/// Tokio time plus an offset the test can change: a wall clock that jumps.
struct JumpClock {
    inner: TokioClock,
    offset: Mutex<chrono::Duration>,
}

impl cexdr::backup::scheduler::Clock for JumpClock {
    fn now(&self) -> DateTime<Utc> {
        self.inner.now() + *self.offset.lock().unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn a_clock_jumping_back_does_not_run_a_slot_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = policy(dir.path(), "");
    p.jobs.retain(|j| j.name == "a");
    let store = store::build(&p.store).await.unwrap();
    let rec = Arc::new(Recorder::default());
    let clock = Arc::new(JumpClock {
        inner: TokioClock::starting_at(at("2026-11-25T01:59:30Z")),
        offset: Mutex::new(chrono::Duration::zero()),
    });
    let mut s = Scheduler::new(
        p,
        store,
        clock.clone(),
        cexdr::backup::metrics::Metrics::new(),
    );
    s.add_sink(rec.clone());
    let (ctl, rx) = mpsc::channel(1);
    let task = tokio::spawn(s.run(rx));
    tokio::time::sleep(Duration::from_secs(5 * 60)).await; // 02:04:30, after the 02:00 run
                                                           // NTP steps the clock back 15 minutes (to 01:49:30), then forward 2 hours.
    *clock.offset.lock().unwrap() = chrono::Duration::minutes(-15);
    tokio::time::sleep(Duration::from_secs(30 * 60)).await; // 02:19:30 by the clock
    assert_eq!(rec.started("a"), ["02:00"], "02:00 ran once");
    *clock.offset.lock().unwrap() = chrono::Duration::minutes(105);
    // Now 04:04:30 by the clock: the jump skipped 03:00 and 04:00; one run
    // catches up (reported for its first missed slot), not one per slot.
    tokio::time::sleep(Duration::from_secs(2 * 60)).await;
    ctl.send(Control::Stop).await.unwrap();
    task.await.unwrap().unwrap();
    tokio::task::yield_now().await;
    let runs = rec.started("a");
    assert_eq!(runs.iter().filter(|r| *r == "02:00").count(), 1, "{runs:?}");
    assert_eq!(runs, ["02:00", "03:00"], "one run for the jump forward");
}
