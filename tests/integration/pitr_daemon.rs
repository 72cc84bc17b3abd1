//! The daemon's side of PITR against private MariaDB servers: it runs the
//! archiver of a mysql job with `binlog = {}` (its series on /metrics),
//! shares the job with a standalone `cexdr binlog archive` through the
//! binlog lease, closes its open segment on SIGTERM, and prunes segments
//! after its scheduled backups.
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::mariadb_server::{MariaDb, Options};
use crate::pitr::{
    checksum, pitr_json, policy_for, quiet_second, restore_until, segment_files, write_rows,
    ArchiverProc,
};

/// A `cexdr daemon` child with JSON logs; SIGKILLed on drop.
struct Daemon {
    child: Option<Child>,
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(policy: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cexdr"))
            .args([
                "--policy",
                policy.to_str().unwrap(),
                "--log-format",
                "json",
                "-v",
                "daemon",
            ])
            .env_remove("CEXDR_POLICY")
            .env_remove("CEXDR_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child: Some(child),
            rx,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Ok(l) = self.rx.try_recv() {
            self.seen.push(l);
        }
    }

    /// The JSON log lines seen so far matching every `(field, value)`.
    fn matching(&mut self, want: &[(&str, &str)]) -> Vec<serde_json::Value> {
        self.drain();
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| want.iter().all(|(k, val)| v[*k].as_str() == Some(*val)))
            .collect()
    }

    /// Waits for a log line matching `want` (already seen or new).
    fn wait(&mut self, want: &[(&str, &str)], secs: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = self.matching(want).pop() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {want:?} within {secs}s; seen:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics_addr(&mut self) -> String {
        let v = self.wait(&[("message", "serving metrics")], 30);
        v["address"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned()
    }

    /// SIGTERM, then the exit code.
    fn stop(&mut self) -> i32 {
        let mut c = self.child.take().expect("running");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                self.drain();
                return s.code().unwrap_or(-1);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "daemon did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&mut self) -> String {
        self.drain();
        self.seen.join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    out
}

/// The value of `name{cexdr_job="job"}` in a scrape.
fn sample(m: &str, name: &str, job: &str) -> Option<f64> {
    let prefix = format!("{name}{{cexdr_job=\"{job}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

/// Adds a `[daemon]` table (and job keys) to a `policy_for` policy.
fn daemonize(policy: &Path, job_keys: &str, daemon: &str) {
    let text = std::fs::read_to_string(policy).unwrap();
    let text = text.replace("binlog = {", &format!("{job_keys}binlog = {{"));
    std::fs::write(
        policy,
        format!("{text}\n[daemon]\nmetrics-listen = \"127.0.0.1:0\"\n{daemon}"),
    )
    .unwrap();
}

/// Waits until the archive's (single) window reaches GTID `want`.
fn wait_window_to(policy: &Path, job: &str, want: &str, what: &mut dyn FnMut() -> String) {
    let t0 = Instant::now();
    loop {
        let r = pitr_json(policy, job);
        let to = r["windows"]
            .as_array()
            .and_then(|w| w.last())
            .map(|w| w["to_gtid"].as_str().unwrap_or("").to_string());
        if to.as_deref() == Some(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "archive did not reach {want}: {r}\nlog:\n{}",
            what()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every object under the job's archive folder is a manifest (or its
/// signature) or a segment with a manifest: nothing half-written.
fn assert_no_partial_segment(dir: &Path, job: &str) {
    let root = dir.join("store").join("binlog").join(job);
    let files: Vec<String> = walk(&root)
        .into_iter()
        .filter(|p| root.join(p).is_file())
        .map(|p| p.display().to_string())
        .collect();
    for f in &files {
        let name = f.rsplit('/').next().unwrap();
        if name.ends_with(".json") || name.ends_with(".json.sig") {
            continue;
        }
        assert!(name.contains(".binlog"), "unexpected object {f}: {files:?}");
        let seq = &name[..12];
        let folder = f.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let manifest = format!("{folder}/{seq}.json");
        assert!(
            files.contains(&manifest),
            "segment {f} has no manifest ({manifest}): {files:?}"
        );
    }
}

/// A standalone archiver holds the lease: the daemon waits (and says so),
/// shows no binlog series for the job and archives nothing; once it stops,
/// the daemon takes over, archives a writer's transactions and shows the
/// lag; its SIGTERM mid-write closes the open segment (no half-written
/// object) and the window has no gap.
#[test]
fn daemon_archives_shares_the_lease_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let p = MariaDb::primary();
    let db = "pitr_dmn";
    let job = "dmn";
    p.sql(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.ev (id INT PRIMARY KEY, v VARCHAR(40))"
    ));
    let policy = policy_for(dir.path(), &p, db, job);
    daemonize(&policy, "", "shutdown-grace = \"20s\"\n");
    let pol = policy.to_str().unwrap();
    assert_code(&cexdr(&["--policy", pol, "backup", job]), 0);

    // 1. The standalone archiver takes the lease first.
    let mut arch = ArchiverProc::start(&policy, job, dir.path().join("standalone.log"));
    write_rows(&p, db, 0, 20);
    let t0 = Instant::now();
    loop {
        let r = pitr_json(&policy, job);
        if r["segments"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", arch.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut d = Daemon::start(&policy);
    let addr = d.metrics_addr();
    let v = d.wait(
        &[
            (
                "message",
                "binlog archiver: another process holds the job's binlog lease; waiting for it",
            ),
            ("job", job),
        ],
        30,
    );
    assert!(
        v["error"].as_str().unwrap_or("").contains("pid"),
        "the holder is named: {v}"
    );
    write_rows(&p, db, 100, 20);
    wait_window_to(&policy, job, &p.gtid_binlog_pos(), &mut || arch.log());
    let m = scrape(&addr);
    assert_eq!(sample(&m, "cexdr_binlog_lag_seconds", job), None, "{m}");
    assert!(
        d.matching(&[("message", "binlog archiver: streaming"), ("job", job)])
            .is_empty(),
        "the daemon streamed while the standalone archiver held the lease:\n{}",
        d.log()
    );

    // 2. The standalone one stops: the daemon takes over.
    assert_eq!(arch.stop(), 0, "{}", arch.log());
    let segments_before = pitr_json(&policy, job)["segments"].as_u64().unwrap();
    d.wait(
        &[("message", "binlog archiver: streaming"), ("job", job)],
        30,
    );
    write_rows(&p, db, 200, 20);
    let pos = p.gtid_binlog_pos();
    wait_window_to(&policy, job, &pos, &mut || d.log());
    assert!(pitr_json(&policy, job)["segments"].as_u64().unwrap() > segments_before);
    let t0 = Instant::now();
    let m = loop {
        let m = scrape(&addr);
        if sample(&m, "cexdr_binlog_segments_total", job).unwrap_or(0.0) > 0.0 {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let lag = sample(&m, "cexdr_binlog_lag_seconds", job).expect("lag on /metrics");
    assert!((0.0..60.0).contains(&lag), "lag {lag}\n{m}");
    assert_eq!(sample(&m, "cexdr_binlog_connected", job), Some(1.0), "{m}");
    assert!(sample(&m, "cexdr_binlog_stored_bytes_total", job).unwrap() > 0.0);
    assert_eq!(
        sample(&m, "cexdr_binlog_gap_records", job),
        Some(0.0),
        "{m}"
    );
    assert!(sample(&m, "cexdr_binlog_reconnects_total", job).is_some());
    assert!(m.contains("# TYPE cexdr_binlog_lag_seconds gauge"), "{m}");

    // 3. SIGTERM while a writer commits: the open segment is closed.
    let stop = AtomicBool::new(false);
    let code = std::thread::scope(|s| {
        let w = s.spawn(|| {
            let mut i = 1000;
            while !stop.load(Ordering::Relaxed) {
                write_rows(&p, db, i, 5);
                i += 5;
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_millis(1500));
        let code = d.stop();
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        code
    });
    let log = d.log();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("binlog archiver stopped"), "{log}");
    assert_no_partial_segment(dir.path(), job);
    let r = pitr_json(&policy, job);
    assert_eq!(r["orphans"], 0, "{r}");
    let o = cexdr(&["--policy", pol, "binlog", "verify", job]);
    assert_code(&o, 0);

    // What the daemon left is continued without a hole.
    let mut arch = ArchiverProc::start(&policy, job, dir.path().join("standalone2.log"));
    let want = p.gtid_binlog_pos();
    wait_window_to(&policy, job, &want, &mut || arch.log());
    let cut = (quiet_second(), checksum(&p, db));
    write_rows(&p, db, 90_000, 1);
    wait_window_to(&policy, job, &p.gtid_binlog_pos(), &mut || arch.log());
    assert_eq!(arch.stop(), 0, "{}", arch.log());
    let r = pitr_json(&policy, job);
    assert_eq!(r["windows"].as_array().unwrap().len(), 1, "{r}");
    let breaks: Vec<_> = r["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| !matches!(g["kind"].as_str(), Some("no-base" | "before-archive")))
        .collect();
    assert!(breaks.is_empty(), "{r}");
    assert_code(&cexdr(&["--policy", pol, "binlog", "verify", job]), 0);
    let target = MariaDb::start(Options {
        binlog: false,
        ..Options::default()
    });
    let o = restore_until(&policy, job, &cut.0.to_rfc3339(), &target);
    assert_code(&o, 0);
    assert_eq!(checksum(&target, db), cut.1);
}

/// The daemon's prune after a scheduled backup removes the segments older
/// than what the oldest kept base needs, says so, and keeps the rest: a
/// restore after that base still gives exactly the rows committed by then.
#[test]
fn daemon_prune_after_a_backup_removes_segments_before_the_oldest_kept_base() {
    let dir = tempfile::tempdir().unwrap();
    let p = MariaDb::primary();
    let db = "pitr_dprune";
    let job = "dpr";
    p.sql(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.ev (id INT PRIMARY KEY, v VARCHAR(40))"
    ));
    let policy = policy_for(dir.path(), &p, db, job);
    // Every minute, and at once (never backed up); the newest backup only.
    daemonize(
        &policy,
        "schedule = \"* * * * *\"\nkeep = { last = 1 }\n",
        "catch-up = true\n",
    );
    let mut d = Daemon::start(&policy);
    d.wait(&[("message", "run succeeded"), ("job", job)], 60);
    write_rows(&p, db, 0, 20);
    wait_window_to(&policy, job, &p.gtid_binlog_pos(), &mut || d.log());
    let before = segment_files(dir.path(), job).len();
    // Writes keep coming until a scheduled backup's prune removed segments.
    let t0 = Instant::now();
    let mut i = 100;
    let pruned = loop {
        let hit = d
            .matching(&[("message", "binlog segments pruned"), ("job", job)])
            .into_iter()
            .find(|v| v["removed"].as_u64().unwrap_or(0) > 0);
        if let Some(v) = hit {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(200),
            "no prune removed segments:\n{}",
            d.log()
        );
        write_rows(&p, db, i, 5);
        i += 5;
        std::thread::sleep(Duration::from_millis(1000));
    };
    assert!(pruned["reason"]
        .as_str()
        .unwrap()
        .contains("the oldest kept base"));
    write_rows(&p, db, 50_000, 10);
    let cut = (quiet_second(), checksum(&p, db));
    write_rows(&p, db, 60_000, 1);
    wait_window_to(&policy, job, &p.gtid_binlog_pos(), &mut || d.log());
    assert_eq!(d.stop(), 0, "{}", d.log());

    let after = segment_files(dir.path(), job).len();
    assert!(before > 0 && after > 0, "{before} -> {after}");
    let listed = catalog_json(&policy);
    let bases: Vec<_> = listed.as_array().unwrap().iter().collect();
    assert_eq!(bases.len(), 1, "keep last = 1: {listed}");
    let r = pitr_json(&policy, job);
    let w = r["windows"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{r}");
    assert_eq!(w[0]["base"], bases[0]["id"], "{r}");
    let removed_last = pruned["last"].as_u64().unwrap();
    assert!(
        w[0]["first_seq"].as_u64().unwrap() > removed_last,
        "the window starts after the removed segments: {r}\n{pruned}"
    );
    let target = MariaDb::start(Options {
        binlog: false,
        ..Options::default()
    });
    let o = restore_until(&policy, job, &cut.0.to_rfc3339(), &target);
    assert_code(&o, 0);
    assert_eq!(checksum(&target, db), cut.1);
}

/// SIGHUP: a job that gains a `binlog` table gets an archiver; one whose
/// server changes gets a new one (here a server with the binlog off: it
/// fails by job and cause, is retried, and shows as failed on /metrics);
/// one that loses the table has its archiver stopped and the lease freed.
#[test]
fn daemon_archivers_follow_reloads_and_failures_are_logged_by_job() {
    let dir = tempfile::tempdir().unwrap();
    let p = MariaDb::primary();
    let off = MariaDb::start(Options {
        binlog: false,
        ..Options::default()
    });
    let db = "pitr_reload";
    let job = "rl";
    p.sql(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.ev (id INT PRIMARY KEY, v VARCHAR(40))"
    ));
    let policy = policy_for(dir.path(), &p, db, job);
    daemonize(&policy, "", "");
    let with = std::fs::read_to_string(&policy).unwrap();
    let binlog_line = with
        .lines()
        .find(|l| l.starts_with("binlog = {"))
        .unwrap()
        .to_owned();
    let without = with.replace(&format!("{binlog_line}\n"), "");
    std::fs::write(&policy, &without).unwrap();
    let lease = dir.path().join("store/.locks/rl@binlog.json");

    let mut d = Daemon::start(&policy);
    let addr = d.metrics_addr();
    d.wait(&[("message", "scheduler started")], 30);
    let pid = d.child.as_ref().unwrap().id() as i32;
    let hup = |d: &mut Daemon, text: &str, n: usize| {
        std::fs::write(&policy, text).unwrap();
        unsafe { libc::kill(pid, libc::SIGHUP) };
        let t0 = Instant::now();
        while d.matching(&[("message", "policy reloaded")]).len() < n {
            assert!(t0.elapsed() < Duration::from_secs(30), "{}", d.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert!(d
        .matching(&[("message", "binlog archiver started")])
        .is_empty());

    // Gains a binlog table: archived.
    hup(&mut d, &with, 1);
    d.wait(
        &[("message", "binlog archiver: streaming"), ("job", job)],
        30,
    );
    write_rows(&p, db, 0, 10);
    let t0 = Instant::now();
    while pitr_json(&policy, job)["segments"].as_u64().unwrap_or(0) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lease.exists());

    // Its server changes to one with the binlog off: restarted, fails, retried.
    hup(&mut d, &with.replace(&p.url(), &off.url()), 2);
    d.wait(
        &[
            (
                "message",
                "binlog archiver: the job changed; restarting its archiver",
            ),
            ("job", job),
        ],
        30,
    );
    let v = d.wait(
        &[
            ("message", "binlog archiver failed; restarting it"),
            ("job", job),
        ],
        30,
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("binary logging is off"),
        "{v}"
    );
    let m = scrape(&addr);
    assert_eq!(sample(&m, "cexdr_binlog_connected", job), Some(0.0), "{m}");
    let failed_at = sample(&m, "cexdr_binlog_metrics_timestamp_seconds", job)
        .unwrap_or_else(|| panic!("a failed archiver keeps its series:\n{m}"));
    assert!(failed_at > 0.0 && failed_at <= chrono::Utc::now().timestamp() as f64);
    // The segments archived before the restart still count.
    assert!(
        sample(&m, "cexdr_binlog_segments_total", job).unwrap() > 0.0,
        "{m}"
    );

    // Loses the table: stopped, lease released, no series.
    hup(&mut d, &without, 3);
    d.wait(
        &[
            (
                "message",
                "binlog archiver: the job (or its binlog table) left the policy; stopping its archiver",
            ),
            ("job", job),
        ],
        30,
    );
    // The first one stopped at the restart, the second one now.
    let t0 = Instant::now();
    while d
        .matching(&[("message", "binlog archiver stopped"), ("job", job)])
        .len()
        < 2
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!lease.exists(), "the lease is released");
    let m = scrape(&addr);
    assert_eq!(sample(&m, "cexdr_binlog_lag_seconds", job), None, "{m}");
    assert_eq!(d.stop(), 0, "{}", d.log());
}
