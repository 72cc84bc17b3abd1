//! The SRE's toolbox through the binary: the progress line read off a real
//! terminal (tmux), its absence on pipes / `-q` / `--json`, the throttled
//! progress events of JSON log mode, the bash completion script driven as
//! bash drives it, and the man pages rendered by `man -l`.
use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cexdr::base::progress::{Logged, Progress, Snapshot, Total, Unit};
use common::*;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cexdr")
}

fn need(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is not installed: run scripts/dev-services start (it installs it)"
    );
}

/// A tmux server of its own (socket in a private folder): never touches
/// anyone's sessions, and leaves nothing behind.
struct Tmux {
    socket: String,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn run(script: &str) -> Tmux {
        need("tmux");
        let dir = tempfile::tempdir().unwrap();
        let t = Tmux {
            socket: dir.path().join("tmux").display().to_string(),
            _dir: dir,
        };
        let st = Command::new("tmux")
            .args([
                "-S",
                &t.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "150",
                "-y",
                "40",
                "-s",
                "t",
            ])
            .arg(format!("{script}; echo ALL-DONE; sleep 600"))
            .env_remove("TMUX")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .status()
            .unwrap();
        assert!(st.success(), "tmux new-session");
        t
    }

    /// The whole screen and its scrollback, as rendered.
    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args([
                "-S",
                &self.socket,
                "capture-pane",
                "-p",
                "-J",
                "-S",
                "-",
                "-t",
                "t",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn wait_done(&self, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if s.lines().any(|l| l.trim() == "ALL-DONE") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "not done in {secs}s; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-S", &self.socket, "kill-server"])
            .status();
    }
}

/// A files job over `mb` MiB of incompressible data, backed up once.
fn backed_up(dir: &Path, mb: usize) -> (String, String) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..mb * 1024 * 1024)
        .map(|_| rand::random::<u8>())
        .collect();
    std::fs::write(src.join("blob"), data).unwrap();
    let policy = write_policy(
        dir,
        &format!(
            "{}\n[[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\n",
            local_store(&dir.join("repo")),
            src.display()
        ),
    );
    let policy = policy.to_str().unwrap().to_owned();
    let o = cexdr(&["--policy", &policy, "backup", "cfg"]);
    assert_code(&o, 0);
    let list = catalog_json(Path::new(&policy));
    (policy, list[0]["id"].as_str().unwrap().to_owned())
}

/// What a progress line would leave in captured output.
fn assert_no_progress(what: &str, out: &str) {
    assert!(
        !out.contains('\r')
            && !out.contains("\x1b[")
            && !out.contains("100%")
            && !out.contains(" ETA "),
        "{what} shows progress:\n{out:?}"
    );
}

#[test]
fn restore_on_a_terminal_shows_a_progress_line_that_reaches_100_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, id) = backed_up(dir.path(), 24);

    // Piped (as in cron, CI, `| tee`): nothing but the result.
    let out = dir.path().join("piped");
    let o = cexdr(&[
        "--policy",
        &policy,
        "restore",
        &id,
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_code(&o, 0);
    assert_no_progress("piped restore stderr", &stderr(&o));
    assert_no_progress("piped restore stdout", &stdout(&o));
    assert!(stdout(&o).starts_with("restored "), "{}", stdout(&o));
    let o = cexdr(&["--policy", &policy, "verify", &id]);
    assert_code(&o, 0);
    assert_no_progress("piped verify", &(stdout(&o) + &stderr(&o)));
    let o = cexdr(&["--policy", &policy, "backup", "cfg"]);
    assert_code(&o, 0);
    assert_no_progress("piped backup", &(stdout(&o) + &stderr(&o)));

    // On a terminal: restore, verify and backup each leave their line; with
    // -q or --json there is none.
    let t = |name: &str| dir.path().join(name).display().to_string();
    let script = format!(
        "{b} --policy {policy} restore {id} --to {a}; echo EXIT-A=$?; \
         {b} --policy {policy} verify {id}; echo EXIT-B=$?; \
         {b} --policy {policy} backup cfg; echo EXIT-C=$?; \
         echo MARK-QUIET; {b} -q --policy {policy} restore {id} --to {q}; \
         {b} -q --policy {policy} verify {id}; echo EXIT-D=$?; \
         echo MARK-JSON; {b} --json --policy {policy} restore {id} --to {j} >/dev/null; \
         {b} --json --policy {policy} verify {id} > /dev/null; echo EXIT-E=$?",
        b = bin(),
        a = t("tty"),
        q = t("quiet"),
        j = t("json"),
    );
    let tmux = Tmux::run(&script);
    let screen = tmux.wait_done(120);
    for code in ["EXIT-A=0", "EXIT-B=0", "EXIT-C=0", "EXIT-D=0", "EXIT-E=0"] {
        assert!(screen.contains(code), "{code} missing:\n{screen}");
    }
    let (main, rest) = screen.split_once("MARK-QUIET").unwrap();
    let line = |prefix: &str| {
        main.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} on the screen:\n{screen}"))
            .to_owned()
    };
    let r = line(&format!("restore {id} ["));
    // 24 MiB of random data stores as a little more (tar headers, gzip).
    assert!(r.contains("] 24.") && r.contains("MiB 100% in "), "{r}");
    assert!(line(&format!("verify {id} [")).contains(" 100% in "));
    assert!(line("backup cfg [").contains(" 100% in "));
    assert!(
        main.contains(&format!("restored 2 entries of backup {id}")),
        "{main}"
    );
    // Nothing is left half-drawn: no line holds two states.
    assert!(main.lines().all(|l| l.matches(" [").count() <= 1), "{main}");
    let (quiet, json) = rest.split_once("MARK-JSON").unwrap();
    assert!(
        !quiet.contains("100%") && !quiet.contains(" ETA "),
        "-q: {quiet}"
    );
    assert!(
        !json.contains("100%") && !json.contains(" ETA "),
        "--json: {json}"
    );
    // The restores under the terminal restored the same bytes (files
    // backups keep the absolute path below the target).
    let rel = dir.path().join("src/blob");
    let rel = rel.strip_prefix("/").unwrap();
    for d in ["tty", "quiet", "json"] {
        assert_eq!(
            std::fs::read(dir.path().join(d).join(rel))
                .unwrap_or_else(|e| panic!("{d}: {e}; {:?}\n{screen}", walk(dir.path()))),
            std::fs::read(dir.path().join("src/blob")).unwrap(),
            "{d}"
        );
    }
}

#[test]
fn json_log_mode_writes_only_json_lines_and_no_progress_line() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, id) = backed_up(dir.path(), 2);
    // Even on a terminal: JSON logs are for shippers, a drawn line would garble them.
    let log = dir.path().join("log");
    let script = format!(
        "{b} --log-format json --policy {policy} verify {id} 2> {log}; echo EXIT=$?",
        b = bin(),
        log = log.display()
    );
    let tmux = Tmux::run(&script);
    let screen = tmux.wait_done(60);
    assert!(screen.contains("EXIT=0"), "{screen}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.is_empty());
    for l in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
        // A run this short (well under 10 s) logs no progress event.
        assert_ne!(v["message"], "progress", "{l}");
    }
    assert_no_progress("json log", &text);
}

#[tokio::test(start_paused = true)]
async fn json_log_progress_comes_at_most_every_10_seconds() {
    let seen: Arc<Mutex<Vec<Snapshot>>> = Arc::default();
    let s = seen.clone();
    let p = Logged::with_sink(Duration::from_secs(10), move |snap| {
        s.lock().unwrap().push(snap.clone())
    });
    p.start("restore x", Total::Exact(1000), Unit::Bytes);
    let step = |secs: u64, n: u64| {
        let p = &p;
        async move {
            tokio::time::advance(Duration::from_secs(secs)).await;
            p.advance(n);
        }
    };
    step(0, 100).await;
    step(4, 100).await;
    step(5, 100).await; // 9 s: nothing yet
    assert!(seen.lock().unwrap().is_empty());
    step(1, 100).await; // 10 s: the first event
    step(3, 100).await; // 13 s
    step(6, 100).await; // 19 s
    step(1, 100).await; // 20 s: the second
    {
        let v = seen.lock().unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!((v[0].done, v[0].elapsed), (400, Duration::from_secs(10)));
        assert_eq!((v[1].done, v[1].elapsed), (700, Duration::from_secs(20)));
        assert_eq!(v[1].percent(), Some(70.0));
        assert_eq!(v[1].rate(), 35.0);
        // 300 left at 35/s.
        assert_eq!(v[1].eta().unwrap().as_secs(), 8);
    }
    p.finish(true);
    step(30, 100).await; // after finish: nothing
    assert_eq!(seen.lock().unwrap().len(), 2);
    // An estimate that was low caps at 100 % and has no time left.
    p.start("backup y", Total::About(100), Unit::Bytes);
    step(11, 150).await;
    let v = seen.lock().unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[2].percent(), Some(100.0));
    assert_eq!(v[2].eta(), Some(Duration::ZERO));
}

fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    // As bash calls a completion function: COMP_WORDS/COMP_CWORD set, then
    // the function with (command, word being completed, previous word).
    let cword = words.len() - 1;
    let line = words.join(" ");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let prog = format!(
        "source '{}' || exit 9\n\
         complete -p cexdr || exit 8\n\
         COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         _cexdr cexdr '{}' '{}'\n\
         printf 'REPLY %s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[cword],
        words[cword - 1],
    );
    let o = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog])
        .output()
        .unwrap();
    assert!(o.status.success(), "bash: {}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(" -F _cexdr cexdr"), "complete -p: {out}");
    out.lines()
        .filter_map(|l| l.strip_prefix("REPLY "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_loads_and_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let o = cexdr(&["completions", "bash"]);
    assert_code(&o, 0);
    let script = dir.path().join("cexdr.bash");
    std::fs::write(&script, &o.stdout).unwrap();

    let top = bash_complete(&script, &["cexdr", ""]);
    for sub in [
        "backup",
        "catalog",
        "verify",
        "restore",
        "policy",
        "failover",
        "runbook",
        "prune",
        "daemon",
        "completions",
        "manpage",
    ] {
        assert!(top.iter().any(|w| w == sub), "{sub} not offered: {top:?}");
    }
    assert_eq!(bash_complete(&script, &["cexdr", "res"]), ["restore"]);
    let cat = bash_complete(&script, &["cexdr", "catalog", ""]);
    for sub in ["list", "show", "verify-signatures", "keygen"] {
        assert!(cat.iter().any(|w| w == sub), "catalog {sub}: {cat:?}");
    }
    let flags = bash_complete(&script, &["cexdr", "restore", "--data"]);
    assert_eq!(flags, ["--database-map"]);
    assert_eq!(
        bash_complete(&script, &["cexdr", "completions", "z"]),
        ["zsh"]
    );

    // zsh and fish: generated for the same tree (those shells are not
    // installed here to load them).
    let zsh = stdout(&cexdr(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef cexdr"), "{zsh:.200}");
    assert!(zsh.contains("verify-signatures"));
    let fish = stdout(&cexdr(&["completions", "fish"]));
    assert!(fish.contains("complete -c cexdr") && fish.contains("database-map"));
    let o = cexdr(&["completions", "tcsh"]);
    assert_code(&o, 2);
}

/// Every subcommand path of the clap tree, as page names (cexdr-catalog-list).
fn page_names(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
    out.push(format!("{prefix}.1"));
    for s in cmd.get_subcommands() {
        page_names(s, &format!("{prefix}-{}", s.get_name()), out);
    }
}

#[test]
fn manpage_writes_one_page_per_subcommand_that_man_renders() {
    need("man");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let o = cexdr(&["manpage", "--out", out.to_str().unwrap()]);
    assert_code(&o, 0);
    let mut want = Vec::new();
    page_names(
        &<cexdr::cli::Cli as clap::CommandFactory>::command(),
        "cexdr",
        &mut want,
    );
    want.sort();
    let mut got: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, want, "no temporary file left, one page per command");
    assert!(want.contains(&"cexdr-catalog-verify-signatures.1".to_owned()));
    assert_eq!(stdout(&o).lines().count(), want.len());

    let man = |page: &str| {
        let o = Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(out.join(page))
            .env("MANWIDTH", "100")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        assert!(o.status.success(), "man -l {page}: {}", stderr(&o));
        let text = stdout(&o);
        assert!(
            stderr(&o).trim().is_empty(),
            "man -l {page} warns: {}",
            stderr(&o)
        );
        text
    };
    let top = man("cexdr.1");
    assert!(top.contains("NAME") && top.contains("SYNOPSIS"), "{top}");
    assert!(
        top.contains("cexdr-restore(1)"),
        "subcommands listed: {top}"
    );
    assert!(top.contains("Exit codes"), "{top}");
    let restore = man("cexdr-restore.1");
    assert!(restore.contains("--database-map"), "{restore}");
    assert!(restore.contains("--allow-external-links"), "{restore}");
    let list = man("cexdr-catalog-list.1");
    assert!(list.contains("--since"), "{list}");
    // Every page renders.
    for p in &want {
        assert!(man(p).contains("NAME"), "{p}");
    }
}

/// Metric names the dashboard uses that the daemon's /metrics does not
/// export because another process writes them, with the marker of the row
/// their panels must sit in ("(<marker>)" in its title). Each must NOT be
/// in /metrics. Empty since the daemon runs the binlog archivers and
/// exports their series (the standalone archiver's textfile has the same
/// names).
const PENDING: &[(&str, &str)] = &[];

/// The parts of Grafana's dashboard model (schemaVersion 39) this file uses.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dashboard {
    title: String,
    uid: String,
    schema_version: u32,
    templating: Templating,
    panels: Vec<Panel>,
}

#[derive(serde::Deserialize)]
struct Templating {
    list: Vec<Variable>,
}

#[derive(serde::Deserialize)]
struct Variable {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    query: serde_json::Value,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Panel {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    title: String,
    grid_pos: GridPos,
    #[serde(default)]
    datasource: Option<serde_json::Value>,
    #[serde(default)]
    targets: Vec<Target>,
}

#[derive(serde::Deserialize)]
struct GridPos {
    h: u32,
    w: u32,
    x: u32,
    y: u32,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    ref_id: String,
    expr: String,
}

/// The metric names in a PromQL expression: identifiers that are not
/// label names (inside `{}` or a `by`/`on`/... list), functions or keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let mut s = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => s.push(c),
            _ => {}
        }
    }
    let lists = strip_label_lists(&s);
    lists
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("cexdr_"))
        .map(str::to_owned)
        .collect()
}

/// Removes `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`,
/// `group_left (...)`, `group_right (...)` label lists.
fn strip_label_lists(s: &str) -> String {
    let mut out = s.to_owned();
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        while let Some(i) = find_keyword(&out, kw) {
            let rest = &out[i + kw.len()..];
            let open = rest.find('(').expect("label list");
            assert!(rest[..open].trim().is_empty(), "{kw} without a list in {s}");
            let close = rest.find(')').expect("closed label list");
            out = format!("{} {}", &out[..i], &rest[close + 1..]);
        }
    }
    out
}

fn find_keyword(s: &str, kw: &str) -> Option<usize> {
    let b = s.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut from = 0;
    while let Some(off) = s[from..].find(kw) {
        let i = from + off;
        let before = i == 0 || !ident(b[i - 1]);
        let after = b.get(i + kw.len()).is_none_or(|c| !ident(*c));
        if before && after {
            return Some(i);
        }
        from = i + kw.len();
    }
    None
}

/// The metric names a live daemon exports (`# TYPE` lines of `/metrics`).
fn exported_metric_names() -> std::collections::BTreeSet<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.conf"), "a\n").unwrap();
    let policy = write_policy(
        dir.path(),
        &format!(
            "{}\n[daemon]\ncatch-up = false\nmetrics-listen = \"127.0.0.1:0\"\n\n\
             [[job]]\nname = \"cfg\"\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"@daily\"\n",
            local_store(&dir.path().join("repo")),
            src.display()
        ),
    );
    let mut child = Command::new(bin())
        .args([
            "--policy",
            policy.to_str().unwrap(),
            "--log-format",
            "json",
            "daemon",
        ])
        .env_remove("CEXDR_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let child = Kill(child);
    let mut addr = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["message"] == "serving metrics" {
                addr = v["address"].as_str().map(|a| {
                    a.trim_start_matches("http://")
                        .trim_end_matches("/metrics")
                        .to_owned()
                });
                break;
            }
        }
    }
    let addr = addr.expect("the daemon said where it serves metrics");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    drop(child);
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

#[test]
fn grafana_dashboard_queries_use_exported_metrics_and_parse_with_promtool() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/cexdr.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let d: Dashboard = serde_json::from_str(&text).expect("a Grafana dashboard model");
    assert_eq!((d.uid.as_str(), d.schema_version), ("cexdr", 39));
    assert!(!d.title.is_empty());

    // Layout: unique ids, inside the 24-column grid, no two panels overlap.
    let mut ids = std::collections::BTreeSet::new();
    for p in &d.panels {
        assert!(ids.insert(p.id), "panel id {} twice", p.id);
        let g = &p.grid_pos;
        assert!(
            g.w > 0 && g.h > 0 && g.x + g.w <= 24,
            "{}: {}x{} at {}",
            p.title,
            g.w,
            g.h,
            g.x
        );
    }
    for (i, a) in d.panels.iter().enumerate() {
        for b in &d.panels[i + 1..] {
            let (p, q) = (&a.grid_pos, &b.grid_pos);
            let apart =
                p.x + p.w <= q.x || q.x + q.w <= p.x || p.y + p.h <= q.y || q.y + q.h <= p.y;
            assert!(apart, "{:?} overlaps {:?}", a.title, b.title);
        }
    }
    let vars: Vec<&str> = d.templating.list.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(vars, ["datasource", "instance", "job"]);
    assert_eq!(d.templating.list[0].kind, "datasource");

    // Every query: its metric names, with Grafana's variables filled in as
    // Grafana would for "All".
    let mut queries: Vec<(String, String, String)> = Vec::new(); // (row, panel, expr)
    for v in &d.templating.list[1..] {
        let q = v.query["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(',').map(|(m, _)| m))
            .unwrap_or_else(|| panic!("variable {}: {q}", v.name));
        queries.push(("variables".into(), v.name.clone(), inner.to_owned()));
    }
    let mut row = String::new();
    let mut panels = 0;
    for p in &d.panels {
        if p.kind == "row" {
            row = p.title.clone();
            continue;
        }
        panels += 1;
        assert_eq!(
            p.datasource.as_ref().map(|d| d["uid"].clone()),
            Some(serde_json::json!("${datasource}")),
            "{}",
            p.title
        );
        assert!(!p.targets.is_empty(), "{} has no query", p.title);
        let mut refs = std::collections::BTreeSet::new();
        for t in &p.targets {
            assert!(
                refs.insert(t.ref_id.clone()),
                "{}: refId {} twice",
                p.title,
                t.ref_id
            );
            queries.push((row.clone(), p.title.clone(), t.expr.clone()));
        }
    }
    assert!(panels >= 20, "{panels} panels");

    let exported = exported_metric_names();
    assert!(
        exported.contains("cexdr_backup_last_success_timestamp_seconds"),
        "{exported:?}"
    );
    for (name, branch) in PENDING {
        assert!(
            !exported.contains(*name),
            "{name} ({branch}) is in the daemon's /metrics now: remove it from PENDING"
        );
    }
    let mut used = std::collections::BTreeSet::new();
    for (row, panel, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{panel}: no metric in {expr}");
        for n in names {
            if let Some((_, branch)) = PENDING.iter().find(|(p, _)| *p == n) {
                assert!(
                    row.contains(&format!("({branch})")),
                    "{panel}: {n} comes from the {branch} but the panel is in row {row:?}"
                );
            } else {
                assert!(
                    exported.contains(&n),
                    "{panel}: {n} is not a metric cexdr exports ({exported:?})"
                );
            }
            used.insert(n);
        }
    }
    for (name, _) in PENDING {
        assert!(
            used.contains(*name),
            "{name} is in PENDING but no panel uses it"
        );
    }
    // The ones a dashboard must have (issue 16).
    for n in [
        "cexdr_backup_last_success_timestamp_seconds",
        "cexdr_job_schedule_interval_seconds",
        "cexdr_backup_last_duration_seconds",
        "cexdr_backup_last_stored_bytes",
        "cexdr_backup_failures_total",
        "cexdr_verification_last_success",
        "cexdr_prune_errors_total",
        "cexdr_backup_running",
        "cexdr_notification_failures_total",
    ] {
        assert!(used.contains(n), "no panel shows {n}");
    }

    // promtool parses every expression (as recording rules in a throwaway file).
    need("promtool");
    let mut rules = Vec::new();
    for (i, (_, panel, expr)) in queries.iter().enumerate() {
        let e = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$job", ".*");
        assert!(!e.contains('$'), "{panel}: unknown variable in {expr}");
        rules.push(serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": e}));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    // JSON is YAML: no quoting to get wrong.
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let o = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "promtool: {}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{}",
        stdout(&o)
    );

    // And it does reject a broken expression (the check can fail).
    let bad = serde_json::json!({"groups": [{"name": "d", "rules": [{"record": "d:x", "expr": "sum by (cexdr_job (cexdr_backup_running)"}]}]});
    std::fs::write(&file, bad.to_string()).unwrap();
    let o = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn metric_names_skip_labels_and_functions() {
    assert_eq!(
        metric_names(
            r#"sum by (instance, cexdr_job) (increase(cexdr_a_total{cexdr_job=~"$job"}[1h])) / on(instance, cexdr_job) group_left() cexdr_b"#
        ),
        ["cexdr_a_total", "cexdr_b"]
    );
}

#[test]
fn progress_mode_table() {
    use cexdr::cli::output::LogFormat::{Human, Json};
    use cexdr::cli::progress::{mode, Mode};
    // (json, quiet, log format, both streams terminals) -> mode
    let table = [
        ((false, false, Human, true), Mode::Line),
        ((false, false, Human, false), Mode::Off),
        ((true, false, Human, true), Mode::Off),
        ((false, true, Human, true), Mode::Off),
        ((false, false, Json, true), Mode::Log),
        ((false, false, Json, false), Mode::Log),
        ((true, false, Json, false), Mode::Log),
        ((false, true, Json, true), Mode::Off),
    ];
    for ((json, quiet, fmt, tty), want) in table {
        assert_eq!(
            mode(json, quiet, fmt, tty),
            want,
            "{json} {quiet} {fmt:?} {tty}"
        );
    }
}
