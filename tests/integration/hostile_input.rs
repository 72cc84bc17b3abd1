//! Property tests over the parsers that read untrusted bytes: whatever the
//! input, they return an error or a value — never panic, never write
//! outside the restore target. Bounded case counts keep CI time fixed.
use std::fs;
use std::path::Path;

use proptest::prelude::*;

use cexdr::backup::policy::Policy;
use cexdr::backup::source::files::unpack_safe;

#[derive(Debug, Clone)]
enum Kind {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
    Fifo,
}

fn name() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("".to_owned()),
        "[a-c]{1,3}",
        Just("link".to_owned()),
    ];
    (any::<bool>(), prop::collection::vec(part, 1..5)).prop_map(|(abs, parts)| {
        let p = parts.join("/");
        if abs {
            format!("/{p}")
        } else {
            p
        }
    })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::File),
        Just(Kind::Dir),
        name().prop_map(Kind::Symlink),
        name().prop_map(Kind::Hardlink),
        Just(Kind::Fifo),
    ]
}

fn build(entries: &[(String, Kind)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (n, k) in entries {
        let mut h = tar::Header::new_gnu();
        let bytes = n.as_bytes();
        let len = bytes.len().min(99);
        h.as_gnu_mut().unwrap().name[..len].copy_from_slice(&bytes[..len]);
        let (t, link, data): (tar::EntryType, Option<&str>, &[u8]) = match k {
            Kind::File => (tar::EntryType::Regular, None, b"data"),
            Kind::Dir => (tar::EntryType::Directory, None, b""),
            Kind::Symlink(l) => (tar::EntryType::Symlink, Some(l), b""),
            Kind::Hardlink(l) => (tar::EntryType::Link, Some(l), b""),
            Kind::Fifo => (tar::EntryType::Fifo, None, b""),
        };
        if let Some(l) = link {
            let lb = l.as_bytes();
            let ll = lb.len().min(99);
            h.as_gnu_mut().unwrap().linkname[..ll].copy_from_slice(&lb[..ll]);
        }
        h.set_entry_type(t);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                out.push(e.path().display().to_string());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// Any archive of hostile names, links and special files: nothing is
    /// created outside the target, with or without external symlinks.
    #[test]
    fn tar_restore_never_writes_outside(entries in prop::collection::vec((name(), kind()), 1..8), external in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/target");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(dir.path().join("a/b/sibling")).unwrap();
        let before: Vec<String> = snapshot(dir.path()).into_iter().filter(|p| !p.starts_with(&dest.display().to_string())).collect();
        let data = build(&entries);
        let _ = unpack_safe(&data[..], &dest, external);
        let after: Vec<String> = snapshot(dir.path()).into_iter().filter(|p| !p.starts_with(&dest.display().to_string())).collect();
        prop_assert_eq!(before, after);
    }

    /// Random bytes and truncations never panic the tar reader.
    #[test]
    fn tar_restore_survives_garbage(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let dir = tempfile::tempdir().unwrap();
        let _ = unpack_safe(&data[..], dir.path(), false);
    }

    /// Policy parsing never panics, whatever the text.
    #[test]
    fn policy_parser_never_panics(text in "\\PC{0,400}") {
        let _ = Policy::parse(Path::new("/p.toml"), &text);
    }

    /// Policy-shaped text with random keys and values: errors, never panics.
    #[test]
    fn policy_like_text_never_panics(
        kind in prop_oneof![Just("files".to_owned()), Just("mysql".to_owned()), Just("redis".to_owned()), "[a-z]{0,6}"],
        key in prop_oneof![Just("paths".to_owned()), Just("url".to_owned()), Just("schedule".to_owned()), Just("keep".to_owned()), Just("threads".to_owned()), "[a-z-]{1,12}"],
        value in prop_oneof![Just("\"x\"".to_owned()), Just("[\"/etc\"]".to_owned()), Just("{ last = 0 }".to_owned()), Just("-1".to_owned()), "\"[ -~]{0,20}\""],
    ) {
        let text = format!("[store]\nkind = \"local\"\npath = \"r\"\n[[job]]\nname = \"j\"\nkind = \"{kind}\"\n{key} = {value}\n");
        let _ = Policy::parse(Path::new("/p.toml"), &text);
    }

    /// Manifest and verification JSON from the store: errors, never panics.
    #[test]
    fn manifest_json_never_panics(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = serde_json::from_slice::<cexdr::backup::catalog::Manifest>(&data);
        let _ = serde_json::from_slice::<cexdr::backup::catalog::Verification>(&data);
    }

    /// The streaming RDB checker: random bytes in random chunk sizes give
    /// an error or a summary, never a panic.
    #[test]
    fn rdb_checker_never_panics(data in prop::collection::vec(any::<u8>(), 0..4096), cut in 1usize..600, magic in any::<bool>()) {
        let mut bytes = if magic { b"REDIS0011".to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&data);
        let mut c = cexdr::backup::source::redis::rdb::Checker::new();
        let mut failed = false;
        for chunk in bytes.chunks(cut) {
            if c.feed(chunk).is_err() {
                failed = true;
                break;
            }
        }
        if !failed {
            let _ = c.finish();
        }
    }

    /// Failover journals from disk (JSON lines): garbage, torn lines and
    /// wrong shapes are errors, never panics, and replay of whatever parses
    /// never panics either.
    #[test]
    fn journal_reader_never_panics(lines in prop::collection::vec(prop_oneof![
        "\\PC{0,80}".prop_map(|s| s),
        Just("{\"seq\":1,\"at\":\"2026-01-01T00:00:00Z\",\"record\":{\"type\":\"run-started\"}}".to_owned()),
        Just("{\"seq\":2}".to_owned()),
        Just("{".to_owned()),
    ], 0..8), torn in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let mut text = lines.join("\n");
        if !torn {
            text.push('\n');
        }
        fs::write(&path, text).unwrap();
        if let Ok((entries, _)) = cexdr::failover::journal::read_entries(&path) {
            let _ = cexdr::failover::journal::Replay::from_entries(&entries);
        }
    }

    /// The restore's SQL statement splitter: hostile text (quotes, escapes,
    /// comments, DELIMITER lines, markers) never panics, and the pieces do
    /// not depend on how the stream was cut into chunks.
    #[test]
    fn sql_splitter_is_chunk_invariant(parts in prop::collection::vec(prop_oneof![
        Just("INSERT INTO t VALUES ('a;b', \"c\\\"d\");\n".to_owned()),
        Just("-- cexdr: table db.t\n".to_owned()),
        Just("DELIMITER ;;\nCREATE TRIGGER x BEFORE INSERT ON t FOR EACH ROW BEGIN SET @a=1; END;;\nDELIMITER ;\n".to_owned()),
        Just("/* c;o;m */ SELECT 1;".to_owned()),
        Just("# hash comment ;\n".to_owned()),
        Just("'unterminated".to_owned()),
        "[ -~\n]{0,40}",
    ], 0..12), cut in 1usize..64) {
        use cexdr::backup::source::mysql::sql::{Piece, Splitter, Unterminated};
        let text: String = parts.concat();
        let run = |chunk: usize| -> (Vec<Piece>, Result<Option<Piece>, Unterminated>) {
            let mut s = Splitter::default();
            let mut out = Vec::new();
            for c in text.as_bytes().chunks(chunk.max(1)) {
                s.feed(c);
                while let Some(p) = s.next_piece() {
                    out.push(p);
                }
            }
            let end = s.finish();
            (out, end)
        };
        let (whole, whole_end) = run(text.len().max(1));
        let (cut_up, cut_end) = run(cut);
        prop_assert_eq!(whole, cut_up);
        prop_assert_eq!(whole_end, cut_end);
    }

    /// Runbook parsing never panics, whatever the text.
    #[test]
    fn runbook_parser_never_panics(text in "\\PC{0,400}", kind in prop_oneof![
        Just("check-primary".to_owned()), Just("dns-switch".to_owned()), Just("scale-up".to_owned()), "[a-z-]{0,12}"
    ]) {
        let _ = cexdr::failover::runbook::Runbook::parse(Path::new("/r.toml"), &text);
        let shaped = format!("name = \"x\"\n[[step]]\nname = \"s\"\nkind = \"{kind}\"\n{text}\n");
        let _ = cexdr::failover::runbook::Runbook::parse(Path::new("/r.toml"), &shaped);
    }
}

fn policy_with(store_extra: &str, daemon: &str, job_extra: &str) -> String {
    format!(
        "[store]\nkind = \"s3\"\nbucket = \"b\"\n{store_extra}\n[daemon]\n{daemon}\n[[job]]\nname = \"j\"\nkind = \"files\"\npaths = [\"/etc\"]\n{job_extra}"
    )
}

/// The property tests below only mean something if sane values parse.
#[test]
fn range_checked_keys_accept_sane_values() {
    let ok = policy_with(
        "part-size = \"8MiB\"\n",
        "jitter = \"5m\"\nincomplete-grace = \"24h\"\nshutdown-grace = \"30s\"\n",
        "timeout = \"2h\"\nkeep = { within = \"30d\" }\n",
    );
    Policy::parse(Path::new("/p.toml"), &ok).unwrap();
    let bad = policy_with("part-size = \"6GiB\"\n", "", "");
    let e = Policy::parse(Path::new("/p.toml"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/p.toml:4:") && e.contains("part-size"), "{e}");
    let bad = policy_with("", "", "timeout = \"200000000000d\"\n");
    let e = Policy::parse(Path::new("/p.toml"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("timeout") && e.contains("out of range"), "{e}");
}

/// Numbers users type, at and past every limit, with every unit.
fn extreme() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(u64::MAX.to_string()),
            Just("99999999999999999999999".to_owned()),
            Just("200000000000".to_owned()),
            Just("0".to_owned()),
            Just("-1".to_owned()),
            Just(String::new()),
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..100_000).prop_map(|n| n.to_string()),
        ],
        prop_oneof![
            Just("s"),
            Just("ms"),
            Just("m"),
            Just("h"),
            Just("d"),
            Just("w"),
            Just("y"),
            Just("B"),
            Just("KiB"),
            Just("MiB"),
            Just("GiB"),
            Just(""),
        ],
    )
        .prop_map(|(n, u)| format!("{n}{u}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Issue 11: every duration and size parser returns a value in range
    /// or an error, and what it returns is safe to add to a clock.
    #[test]
    fn duration_and_size_parsers_never_panic(v in extreme()) {
        use cexdr::base::duration::{backoff, deadline, MAX};
        for d in [cexdr::base::parse_duration(&v), cexdr::base::parse_duration_ms(&v)].into_iter().flatten() {
            prop_assert!(d <= MAX, "{v} gave {d:?}");
            let now = tokio::time::Instant::now();
            prop_assert!(deadline(now, d) >= now);
            let _ = backoff(d, u32::MAX, std::time::Duration::MAX);
            let _ = chrono::Duration::from_std(d).unwrap();
        }
        let _ = cexdr::base::parse_size(&v);
    }

    /// Extreme values in every duration/size key of a policy: a
    /// file:line:key error or a valid policy, never a panic.
    #[test]
    fn policy_numbers_are_range_checked(v in extreme(), which in 0usize..7) {
        let (store_extra, job_extra, daemon) = match which {
            0 => (format!("part-size = \"{v}\"\n"), String::new(), String::new()),
            1 => (String::new(), format!("timeout = \"{v}\"\n"), String::new()),
            2 => (String::new(), format!("keep = {{ within = \"{v}\" }}\n"), String::new()),
            3 => (String::new(), String::new(), format!("jitter = \"{v}\"\n")),
            4 => (String::new(), String::new(), format!("incomplete-grace = \"{v}\"\n")),
            5 => (String::new(), String::new(), format!("shutdown-grace = \"{v}\"\n")),
            _ => (String::new(), format!("keep = {{ within = \"{v}\", last = 3 }}\n"), String::new()),
        };
        let text = policy_with(&store_extra, &daemon, &job_extra);
        if let Err(e) = Policy::parse(Path::new("/p.toml"), &text) {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("/p.toml:"), "{msg}");
        }
    }

    /// The same for runbook timings.
    #[test]
    fn runbook_numbers_are_range_checked(v in extreme(), which in 0usize..3) {
        let (top, step) = match which {
            0 => (format!("cool-down = \"{v}\"\n"), String::new()),
            1 => (String::new(), format!("timeout = \"{v}\"\n")),
            _ => (String::new(), format!("retries = 3\nbackoff = \"{v}\"\n")),
        };
        let text = format!("name = \"x\"\n{top}[[step]]\nname = \"s\"\nkind = \"exec\"\ncommand = [\"true\"]\n{step}");
        let _ = cexdr::failover::runbook::Runbook::parse(Path::new("/r.toml"), &text);
    }
}
