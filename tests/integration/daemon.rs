//! `cexdr daemon` through the binary: JSON logs, catch-up at start,
//! `/metrics` scraped over HTTP while a job runs, SIGHUP with an invalid
//! policy rejected (the old one keeps running), SIGTERM: the running job is
//! stopped after the grace period with nothing half-written left.
use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

struct Logs {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Logs {
    /// Waits for a JSON log line (already seen or new) whose fields match
    /// all of `want`.
    fn wait(&mut self, want: &[(&str, &str)], secs: u64) -> serde_json::Value {
        let matches =
            |v: &serde_json::Value| want.iter().all(|(k, val)| v[*k].as_str() == Some(*val));
        for line in &self.seen {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if matches(&v) {
                    return v;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!(
                    "no log line with {want:?} within {secs}s; seen:\n{}",
                    self.seen.join("\n")
                ),
            };
            self.seen.push(line.clone());
            if !line.starts_with('{') {
                continue; // the binary's own eprintln lines
            }
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("--log-format json wrote a non-JSON line ({e}): {line}")
            });
            if matches(&v) {
                return v;
            }
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
    assert!(
        out.contains("Content-Type: text/plain; version=0.0.4"),
        "{out}"
    );
    out
}

#[test]
fn daemon_serves_metrics_reloads_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let big = dir.path().join("big");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(small.join("app.conf"), "x = 1\n").unwrap();
    // Incompressible and large: this run is still going when SIGTERM comes.
    let st = Command::new("head")
        .args(["-c", "200M", "/dev/urandom"])
        .stdout(std::fs::File::create(big.join("blob")).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let repo = dir.path().join("repo");
    let text = format!(
        "{}\n[daemon]\nmax-parallel = 2\ncatch-up = true\nshutdown-grace = \"1s\"\nmetrics-listen = \"127.0.0.1:0\"\n\n\
         [[job]]\nname = \"small\"\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"0 3 * * *\"\n\n\
         [[job]]\nname = \"big\"\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"0 3 * * *\"\n",
        local_store(&repo),
        small.display(),
        big.display()
    );
    let policy = write_policy(dir.path(), &text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cexdr"))
        .args([
            "--policy",
            policy.to_str().unwrap(),
            "--log-format",
            "json",
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
    let mut logs = Logs {
        rx,
        seen: Vec::new(),
    };
    let pid = child.id() as i32;
    let guard = scopeguard(pid);

    let v = logs.wait(&[("message", "serving metrics")], 30);
    let url = v["address"].as_str().unwrap().to_owned();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    // Both jobs were never backed up: catch-up runs them at start.
    logs.wait(&[("message", "run succeeded"), ("job", "small")], 60);
    logs.wait(&[("message", "backup started"), ("job", "big")], 60);
    let m = scrape(&addr);
    for want in [
        "cexdr_backup_running{cexdr_job=\"big\"} 1",
        "cexdr_catalog_backups{cexdr_job=\"small\"} 1",
        "cexdr_backup_runs_total{cexdr_job=\"small\"} 1",
        "cexdr_job_schedule_interval_seconds{cexdr_job=\"big\"} 86400",
        "cexdr_backup_last_success_timestamp_seconds{cexdr_job=\"small\"} 1",
    ] {
        assert!(m.contains(want), "{want} missing in:\n{m}");
    }

    // SIGHUP with a broken policy: rejected, the daemon keeps running.
    std::fs::write(&policy, text.replace("max-parallel", "max-paralel")).unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let v = logs.wait(
        &[(
            "message",
            "reload rejected: the new policy is invalid; the old one keeps running",
        )],
        30,
    );
    assert!(v["error"].as_str().unwrap().contains("max-paralel"), "{v}");
    scrape(&addr);
    std::fs::write(&policy, &text).unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    logs.wait(&[("message", "policy reloaded")], 30);

    // SIGTERM while big runs: 1s grace, then it is stopped cleanly.
    let t0 = Instant::now();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    logs.wait(
        &[(
            "message",
            "grace period over: stopping running jobs (uploads aborted, nothing listed)",
        )],
        30,
    );
    logs.wait(&[("message", "scheduler stopped")], 60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "daemon did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(guard);
    assert_eq!(status.code(), Some(0), "{}", logs.seen.join("\n"));

    let listed = catalog_json(&policy);
    let jobs: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["job"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(jobs, ["small"]);
    let files: Vec<_> = walk(&repo)
        .into_iter()
        .filter(|p| repo.join(p).is_file())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("big/") || f.starts_with(".locks/")),
        "{files:?}"
    );
}

/// Kills the daemon if the test fails half-way.
struct Guard(i32);
impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}
fn scopeguard(pid: i32) -> Guard {
    Guard(pid)
}

/// One-shot runs write the same metrics to a node_exporter textfile,
/// atomically, whatever the outcome.
#[test]
fn metrics_file_after_one_shot_runs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.conf"), "a\n").unwrap();
    let text = format!(
        "{}\n[[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"@hourly\"\n\n\
         [[job]]\nname = \"gone\"\nkind = \"files\"\npaths = [\"{}\"]\n",
        local_store(&dir.path().join("repo")),
        src.display(),
        dir.path().join("missing").display()
    );
    let policy = write_policy(dir.path(), &text);
    let p = policy.to_str().unwrap();
    let prom_dir = dir.path().join("textfile");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom = prom_dir.join("cexdr.prom");
    let f = prom.to_str().unwrap();

    let o = cexdr(&["--policy", p, "--metrics-file", f, "backup", "cfg"]);
    assert_code(&o, 0);
    let m = std::fs::read_to_string(&prom).unwrap();
    for want in [
        "# TYPE cexdr_backup_last_success_timestamp_seconds gauge",
        "cexdr_backup_runs_total{cexdr_job=\"cfg\"} 1",
        "cexdr_backup_failures_total{cexdr_job=\"cfg\"} 0",
        "cexdr_catalog_backups{cexdr_job=\"cfg\"} 1",
        "cexdr_job_schedule_interval_seconds{cexdr_job=\"cfg\"} 3600",
    ] {
        assert!(m.contains(want), "{want} missing in:\n{m}");
    }
    assert!(
        m.contains("cexdr_backup_last_stored_bytes{cexdr_job=\"cfg\"} "),
        "{m}"
    );
    // Only the job that ran: per-job textfiles never repeat a series.
    assert!(!m.contains("cexdr_job=\"gone\""), "{m}");
    assert!(!m.contains("cexdr_start_time_seconds"), "{m}");

    // A failing run is recorded too, and the exit code stays the run's.
    let o = cexdr(&["--policy", p, "--metrics-file", f, "backup", "gone"]);
    assert_code(&o, 1);
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(
        m.contains("cexdr_backup_failures_total{cexdr_job=\"gone\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("cexdr_backup_last_failure_timestamp_seconds{cexdr_job=\"gone\"} "),
        "{m}"
    );
    assert!(!m.contains("cexdr_job=\"cfg\""), "{m}");

    // Verification status from the catalog.
    let o = cexdr(&["--policy", p, "--metrics-file", f, "verify", "--job", "cfg"]);
    assert_code(&o, 0);
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(
        m.contains("cexdr_verification_last_success{cexdr_job=\"cfg\"} 1"),
        "{m}"
    );
    // Only the final file is left: no temporary beside it.
    let names: Vec<_> = std::fs::read_dir(&prom_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("cexdr.prom")]);
    // Every sample line is `name{labels} value` or `name value`.
    for l in m.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample: {l}"));
    }
}

/// One request on its own connection (the daemon closes it after the
/// answer): the status line, the headers and the body.
fn http(addr: &str, request_line: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{request_line}\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a whole answer");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

/// The daemon on a free port: `/healthz` says ok once the scheduler runs,
/// beside `/metrics` and `/report`; an unknown path is 404 and a HEAD 405,
/// as before; SIGTERM stops it.
#[test]
fn daemon_serves_healthz_beside_metrics_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.conf"), "x = 1\n").unwrap();
    let text = format!(
        "{}\n[daemon]\nmetrics-listen = \"127.0.0.1:0\"\n\n\
         [[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"0 3 * * *\"\n",
        local_store(&dir.path().join("repo")),
        src.display()
    );
    let policy = write_policy(dir.path(), &text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cexdr"))
        .args([
            "--policy",
            policy.to_str().unwrap(),
            "--log-format",
            "json",
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
    let mut logs = Logs {
        rx,
        seen: Vec::new(),
    };
    let pid = child.id() as i32;
    let guard = scopeguard(pid);
    let v = logs.wait(&[("message", "serving metrics")], 30);
    let addr = v["address"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    logs.wait(&[("message", "scheduler started")], 30);
    // The loop's first tick follows "scheduler started" at once.
    let (status, headers, body) = poll(100, Duration::from_millis(50), || {
        let r = http(&addr, "GET /healthz HTTP/1.1");
        r.0.starts_with("HTTP/1.1 200").then_some(r)
    })
    .expect("/healthz became 200");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; charset=utf-8"),
        "{headers}"
    );
    assert_eq!(body, "ok\n");
    // A query string does not change the path.
    assert!(http(&addr, "GET /healthz?probe=liveness HTTP/1.1")
        .0
        .starts_with("HTTP/1.1 200"));

    let (status, headers, body) = http(&addr, "GET /metrics HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("Content-Length: {}", body.len())),
        "{headers}"
    );
    assert!(
        body.contains("cexdr_job_schedule_interval_seconds{cexdr_job=\"cfg\"} 86400"),
        "{body}"
    );
    let (status, headers, body) = http(&addr, "GET /report HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/html; charset=utf-8"),
        "{headers}"
    );
    assert!(body.contains("data-job=\"cfg\""), "{body}");
    let (status, _, body) = http(&addr, "GET /nope HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, "not found\n");
    let (status, headers, _) = http(&addr, "HEAD /healthz HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET"), "{headers}");
    let (status, _, body) = http(&addr, "POST /metrics HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(body, "method not allowed\n");
    let (status, _, body) = http(&addr, "GET / HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("/healthz"), "{body}");

    unsafe { libc::kill(pid, libc::SIGTERM) };
    logs.wait(&[("message", "scheduler stopped")], 30);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "daemon did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(guard);
    assert_eq!(status.code(), Some(0), "{}", logs.seen.join("\n"));
    // Stopped: nothing listens any more.
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

/// `/healthz` follows the scheduler's loop: 503 before it runs, 200 while it
/// ticks, 503 naming the stall while it does not turn (here: its future is
/// not polled, as when it is blocked in an await), 200 again when it turns,
/// 503 once it stopped. The loop ticks every 50 ms here, so a stall shows
/// within a second of the real clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_while_the_scheduler_loop_is_stuck_or_stopped() {
    use cexdr::backup::metrics::{self, Metrics};
    use cexdr::backup::policy::Policy;
    use cexdr::backup::scheduler::{Control, Scheduler, SystemClock};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.conf"), "x = 1\n").unwrap();
    let text = format!(
        "{}\n[daemon]\nmetrics-listen = \"\"\n\n\
         [[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"0 3 * * *\"\n",
        local_store(&dir.path().join("repo")),
        src.display()
    );
    let p = Policy::load(&write_policy(dir.path(), &text)).unwrap();
    let store = cexdr::store::build(&p.store).await.unwrap();
    let m = Metrics::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, _task) = metrics::serve(m.clone(), "127.0.0.1:0".parse().unwrap(), stop.clone())
        .await
        .unwrap();
    let healthz = || async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let code: u16 = head[9..12].parse().unwrap();
        (code, body.trim_end().to_owned())
    };
    assert_eq!(
        healthz().await,
        (503, "no scheduler runs in this process".into())
    );

    let every = Duration::from_millis(50);
    let mut s = Scheduler::new(p, store, Arc::new(SystemClock), m.clone());
    s.set_heartbeat(every);
    let (ctl, rx) = tokio::sync::mpsc::channel(1);
    let mut run = std::pin::pin!(s.run(rx));
    let healthy = || async {
        poll_async(200, Duration::from_millis(10), || async {
            (healthz().await.0 == 200).then_some(())
        })
        .await
        .expect("/healthz became 200")
    };
    tokio::select! {
        r = run.as_mut() => panic!("the scheduler ended: {r:?}"),
        _ = healthy() => {}
    }

    // Not polled for longer than STALE_TICKS ticks: stuck.
    tokio::time::sleep(every * (metrics::STALE_TICKS + 4)).await;
    let (code, why) = healthz().await;
    assert_eq!(code, 503, "{why}");
    assert!(
        why.starts_with("the scheduler loop is stuck: its last tick was ")
            && why.ends_with(" s ago (it ticks every 0.05 s)"),
        "{why}"
    );

    // Turning again: healthy again.
    tokio::select! {
        r = run.as_mut() => panic!("the scheduler ended: {r:?}"),
        _ = healthy() => {}
    }

    ctl.send(Control::Stop).await.unwrap();
    run.await.unwrap();
    assert_eq!(healthz().await, (503, "the scheduler has stopped".into()));
    stop.cancel();
}
