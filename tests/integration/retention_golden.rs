//! Golden retention cases: each `tests/golden/retention/*.txt` holds the
//! rules, the clock, the newest verified backup and a table of backups
//! (newest first) with the expected verdict and reasons. The test rebuilds
//! the table from `retention::plan` and compares the text.
//! `CEXDR_UPDATE_GOLDEN=1` rewrites the tables (review the diff!).
use std::path::Path;

use cexdr::backup::plan::retention::{plan, render, Snapshot};
use cexdr::backup::policy::Keep;
use chrono::{DateTime, Utc};

fn parse_keep(s: &str) -> Keep {
    let mut k = Keep::default();
    for part in s.split_whitespace() {
        let (name, v) = part.split_once('=').expect("rule=value");
        let n = || Some(v.parse::<u32>().expect("count"));
        match name {
            "last" => k.last = n(),
            "hourly" => k.hourly = n(),
            "daily" => k.daily = n(),
            "weekly" => k.weekly = n(),
            "monthly" => k.monthly = n(),
            "yearly" => k.yearly = n(),
            "within" => k.within = Some(v.to_owned()),
            other => panic!("unknown rule {other}"),
        }
    }
    k
}

fn run_case(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let (head, table) = text.split_once("---\n").expect("--- separates the table");
    let field = |name: &str| -> String {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{}: no {name}:", path.display()))
            .trim()
            .to_owned()
    };
    let now: DateTime<Utc> = field("now").parse().unwrap();
    let keep = parse_keep(&field("keep"));
    let verified = field("verified");
    let backups: Vec<Snapshot> = table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let t = l.split_whitespace().next().unwrap();
            Snapshot {
                id: t.to_owned(),
                time: t.parse().unwrap(),
            }
        })
        .collect();
    let got = render(&plan(
        &backups,
        &keep,
        now,
        Some(verified.as_str()).filter(|v| !v.is_empty()),
    ));
    (format!("{head}---\n{got}"), text)
}

#[test]
fn retention_golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/retention");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "golden cases missing in {}",
        dir.display()
    );
    let update = std::env::var("CEXDR_UPDATE_GOLDEN").is_ok();
    let mut failures = Vec::new();
    for f in &files {
        let (got, want) = run_case(f);
        if got != want {
            if update {
                std::fs::write(f, &got).unwrap();
            } else {
                failures.push(format!(
                    "{}:\n--- want\n{want}\n--- got\n{got}",
                    f.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
