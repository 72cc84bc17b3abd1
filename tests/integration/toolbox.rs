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

/// A tmux server of its own (own socket): never touches anyone's sessions.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(script: &str) -> Tmux {
        need("tmux");
        let t = Tmux {
            socket: format!("cexdr-test-{:08x}", rand::random::<u32>()),
        };
        let st = Command::new("tmux")
            .args([
                "-L",
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
                "-L",
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
            .args(["-L", &self.socket, "kill-server"])
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
