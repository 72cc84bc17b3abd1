//! The audit report: one self-contained HTML page (inline CSS and SVG, no
//! script, no network fetch) showing, per job, a timeline of backups
//! coloured by verification state, stored size over time, the newest
//! backup's age (RPO), the last drill's restore time (RTO), the retention
//! rule and the signature chain. `cexdr catalog report --html FILE` writes
//! it; the daemon serves it at `/report`.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::backup::catalog::{Catalog, Entry, Level, Tombstone};
use crate::backup::policy::{Keep, Policy};
use crate::base::human_duration;
use crate::error::Result;

/// What the report is drawn from: the catalog with every verification
/// record, and the tombstones of pruned backups.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub entries: Vec<Entry>,
    pub pruned: BTreeMap<String, Vec<Tombstone>>,
    pub store: String,
}

/// Reads what the report needs from the store.
pub async fn gather(catalog: &Catalog, jobs: &[String]) -> Result<Input> {
    let entries = catalog.list_full(None).await?;
    let trusted = catalog.published_keys().await?;
    let mut names: Vec<String> = jobs.to_vec();
    for e in &entries {
        if !names.contains(&e.manifest.job) {
            names.push(e.manifest.job.clone());
        }
    }
    let mut pruned = BTreeMap::new();
    for j in &names {
        let t = catalog.tombstones(j, &trusted).await?;
        pruned.insert(j.clone(), t.into_values().map(|(t, _)| t).collect());
    }
    Ok(Input {
        entries,
        pruned,
        store: catalog.store().describe(),
    })
}

/// The states a backup is shown in (also `data-state` in the page).
pub const STATES: [(&str, &str, &str); 5] = [
    ("restore-tested", "restore-tested", "#1f9d55"),
    ("checksum", "checksum-verified", "#3b82f6"),
    ("unverified", "unverified", "#a3a9b5"),
    ("failed", "failed", "#dc2626"),
    ("pruned", "pruned", "#d6d9df"),
];

fn colour(state: &str) -> &'static str {
    STATES
        .iter()
        .find(|s| s.0 == state)
        .map(|s| s.2)
        .unwrap_or("#999")
}

fn state_of(e: &Entry) -> &'static str {
    match e.level() {
        Level::Never => "unverified",
        Level::Failed(_) => "failed",
        Level::Checksum(_) => "checksum",
        Level::RestoreTested(_) => "restore-tested",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A measured restore time: hundredths below 10 s, whole seconds above
/// (`41 s`, as `catalog list` prints it).
pub fn secs(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} s")
    } else {
        format!("{v:.0} s")
    }
}

fn age(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds().max(0) as u64;
    if secs < 60 {
        return format!("{secs} s");
    }
    human_duration(std::time::Duration::from_secs(secs - secs % 60))
}

/// The retention rule in words (`keep the last 7, 4 weekly`).
pub fn keep_words(k: &Keep) -> String {
    if k.is_empty() {
        return "keep everything (no retention rules)".into();
    }
    let mut parts = Vec::new();
    if let Some(n) = k.last {
        parts.push(format!("the last {n}"));
    }
    for (n, unit) in [
        (k.hourly, "hourly"),
        (k.daily, "daily"),
        (k.weekly, "weekly"),
        (k.monthly, "monthly"),
        (k.yearly, "yearly"),
    ] {
        if let Some(n) = n {
            parts.push(format!("{n} {unit}"));
        }
    }
    if let Some(w) = &k.within {
        parts.push(format!("everything within {w}"));
    }
    format!("keep {}", parts.join(", "))
}

/// The chain of one job's manifests: each links to the one before it, or
/// across a pruned one (its tombstone). Returns (links ok, findings).
fn chain(entries: &[&Entry], pruned: &[Tombstone]) -> (usize, Vec<String>) {
    let by_id: BTreeMap<&str, &Tombstone> = pruned.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut ok = 0;
    let mut bad = Vec::new();
    for w in entries.windows(2) {
        let (prev, cur) = (w[0], w[1]);
        let mut link = cur.manifest.previous.clone();
        // Follow tombstones back to an existing backup.
        let mut hops = 0;
        while let Some(l) = &link {
            if l.id == prev.manifest.id || hops > 10_000 {
                break;
            }
            match by_id.get(l.id.as_str()) {
                Some(t) if t.manifest_sha256 == l.manifest_sha256 => {
                    link = t.previous.clone();
                    hops += 1;
                }
                _ => break,
            }
        }
        match link {
            Some(l) if l.id == prev.manifest.id && l.manifest_sha256 == prev.manifest_sha256 => {
                ok += 1
            }
            Some(l) if l.id == prev.manifest.id => bad.push(format!(
                "{}: the previous manifest ({}) was changed after it was linked",
                cur.manifest.id, prev.manifest.id
            )),
            _ => bad.push(format!(
                "{}: gap before it (a backup removed without a tombstone)",
                cur.manifest.id
            )),
        }
    }
    for e in entries {
        match &e.signature_status {
            Some(s) if s.is_ok() => {}
            Some(s) if s.word() == "unsigned" => {}
            Some(s) => bad.push(format!("{}: signature {}", e.manifest.id, s.word())),
            None => {}
        }
    }
    (ok, bad)
}

const CSS: &str = r#"
:root{--ink:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f4f6f9;--card:#fff}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#111827;color:#f9fafb;padding:28px 40px 24px}
header h1{margin:0;font-size:24px;font-weight:650;letter-spacing:.2px}
header .sub{color:#9ca3af;margin-top:4px;font-size:13px}
.summary{display:flex;gap:14px;margin-top:18px;flex-wrap:wrap}
.pill{background:#1f2937;border-radius:10px;padding:10px 16px;min-width:130px}
.pill b{display:block;font-size:22px;font-weight:650}
.pill span{font-size:12px;color:#9ca3af;text-transform:uppercase;letter-spacing:.6px}
.pill.bad b{color:#f87171}.pill.good b{color:#4ade80}
main{padding:26px 40px 40px;max-width:1280px}
.legend{display:flex;gap:18px;flex-wrap:wrap;margin:0 0 18px;color:var(--muted);font-size:13px}
.legend i{display:inline-block;width:11px;height:11px;border-radius:50%;margin-right:6px;vertical-align:-1px}
.job{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:20px 22px 16px;margin-bottom:20px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
.job h2{margin:0 0 14px;font-size:18px;display:flex;align-items:center;gap:10px}
.kind{font-size:11px;font-weight:600;text-transform:uppercase;letter-spacing:.7px;color:#475467;background:#eef1f5;border-radius:6px;padding:3px 8px}
.badge{font-size:12px;font-weight:600;border-radius:999px;padding:3px 10px;color:#fff}
.tiles{display:grid;grid-template-columns:repeat(5,minmax(0,1fr));gap:12px;margin-bottom:14px}
.tile{border:1px solid var(--line);border-radius:10px;padding:10px 12px}
.tile span{display:block;font-size:11px;color:var(--muted);text-transform:uppercase;letter-spacing:.6px}
.tile b{display:block;font-size:19px;font-weight:650;margin-top:2px}
.tile small{color:var(--muted);font-size:12px}
.tile.bad b{color:#dc2626}.tile.good b{color:#15803d}
.charts{display:grid;grid-template-columns:3fr 2fr;gap:16px}
.chart h3{margin:4px 0 4px;font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.6px}
svg{display:block;width:100%;height:auto}
svg text{font-size:10px;fill:#667085}
details{margin-top:10px;font-size:13px}
summary{cursor:pointer;color:var(--muted)}
table{border-collapse:collapse;width:100%;margin-top:8px;font-size:13px}
td,th{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line)}
th{color:var(--muted);font-weight:600;font-size:11px;text-transform:uppercase;letter-spacing:.5px}
td.s i{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px}
.findings{color:#b42318;font-size:13px;margin:8px 0 0;padding-left:18px}
footer{color:var(--muted);font-size:12px;padding:0 40px 30px}
"#;

/// Renders the page.
pub fn html(policy: &Policy, input: &Input, now: DateTime<Utc>) -> String {
    let mut jobs: Vec<String> = policy.jobs.iter().map(|j| j.name.clone()).collect();
    for e in &input.entries {
        if !jobs.contains(&e.manifest.job) {
            jobs.push(e.manifest.job.clone());
        }
    }
    let total = input.entries.len();
    let failed = input
        .entries
        .iter()
        .filter(|e| state_of(e) == "failed")
        .count();
    let tested = input
        .entries
        .iter()
        .filter(|e| state_of(e) == "restore-tested")
        .count();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>cexdr audit report</title><style>{CSS}</style></head><body>\
<header><h1>Backup audit report</h1><div class=\"sub\">{} · generated {} by {}</div>\
<div class=\"summary\">\
<div class=\"pill\"><b>{}</b><span>jobs</span></div>\
<div class=\"pill\"><b>{total}</b><span>backups in the catalog</span></div>\
<div class=\"pill good\"><b>{tested}</b><span>restore-tested</span></div>\
<div class=\"pill{}\"><b id=\"failed-count\">{failed}</b><span>failed verification</span></div>\
</div></header><main>",
        esc(&input.store),
        now.format("%Y-%m-%d %H:%M UTC"),
        esc(crate::backup::catalog::TOOL_VERSION),
        jobs.len(),
        if failed > 0 { " bad" } else { "" },
    );
    out.push_str("<div class=\"legend\">");
    for (state, label, c) in STATES {
        let _ = write!(
            out,
            "<span data-legend=\"{state}\"><i style=\"background:{c}\"></i>{label}</span>"
        );
    }
    out.push_str("</div>");
    for name in &jobs {
        job_card(&mut out, policy, input, name, now);
    }
    out.push_str(
        "</main><footer>RPO: age of the newest complete backup. RTO: the measured restore time of the newest passed restore drill. \
A backup counts as restore-tested once a drill restored it into scratch and compared it with its manifest; checksum-verified once \
its stored bytes were read back, hashed and fully decompressed.</footer></body></html>\n",
    );
    out
}

fn job_card(out: &mut String, policy: &Policy, input: &Input, name: &str, now: DateTime<Utc>) {
    let job = policy.jobs.iter().find(|j| j.name == name);
    let entries: Vec<&Entry> = input
        .entries
        .iter()
        .filter(|e| e.manifest.job == name)
        .collect();
    let pruned: &[Tombstone] = input.pruned.get(name).map(|v| v.as_slice()).unwrap_or(&[]);
    let kind = job
        .map(|j| j.source.kind().name())
        .or_else(|| entries.first().map(|e| e.manifest.kind.name()))
        .unwrap_or("?");
    let newest = entries.last();
    let interval = job.and_then(|j| policy.schedule_interval(j, now));
    let (rpo, rpo_class, rpo_note) = rpo_tile(newest.copied(), interval, now);
    let (rto, rto_class, rto_note) =
        rto_tile(&entries, job.map(|j| j.drill.is_some()).unwrap_or(false));
    let (links, findings) = chain(&entries, pruned);
    let chain_word = if !findings.is_empty() {
        "FINDINGS"
    } else if entries.is_empty() {
        "no backups"
    } else {
        "intact"
    };
    let latest_state = newest.map(|e| state_of(e)).unwrap_or("unverified");
    let retention = job
        .map(|j| keep_words(&j.keep))
        .unwrap_or_else(|| "job not in the policy".into());
    let _ = write!(
        out,
        "<section class=\"job\" data-job=\"{n}\" id=\"job-{n}\"><h2>{n} <span class=\"kind\">{kind}</span>\
<span class=\"badge\" style=\"background:{c}\" data-latest=\"{latest_state}\">newest: {latest_state}</span></h2>\
<div class=\"tiles\">\
<div class=\"tile{rpo_class}\" data-tile=\"rpo\"><span>RPO · newest backup age</span><b>{rpo}</b><small>{rpo_note}</small></div>\
<div class=\"tile{rto_class}\" data-tile=\"rto\"><span>RTO · last drill restore</span><b>{rto}</b><small>{rto_note}</small></div>\
<div class=\"tile\" data-tile=\"backups\"><span>Backups</span><b>{nb}</b><small>{pr} pruned · {stored} stored</small></div>\
<div class=\"tile\" data-tile=\"retention\"><span>Retention</span><b style=\"font-size:14px\">{ret}</b></div>\
<div class=\"tile{chain_class}\" data-tile=\"chain\" data-chain=\"{chain_data}\"><span>Signature chain</span><b>{chain_word}</b><small>{links} link(s) checked</small></div>\
</div>",
        n = esc(name),
        c = colour(latest_state),
        nb = entries.len(),
        pr = pruned.len(),
        stored = human_bytes(entries.iter().map(|e| e.manifest.stored_bytes).sum()),
        ret = esc(&retention),
        chain_class = if findings.is_empty() { " good" } else { " bad" },
        chain_data = if findings.is_empty() { "ok" } else { "findings" },
    );
    out.push_str("<div class=\"charts\">");
    timeline(out, &entries, pruned, now);
    sizes(out, &entries);
    out.push_str("</div>");
    findings_list(out, &findings);
    newest_table(out, &entries);
}

/// The RPO tile (value, class, note): the newest backup's age, bad when it is
/// later than 1.5 schedule intervals. Its own phase so the card only lays out.
fn rpo_tile(
    newest: Option<&Entry>,
    interval: Option<f64>,
    now: DateTime<Utc>,
) -> (String, &'static str, String) {
    match newest {
        None => ("none".to_owned(), " bad", "no backup yet".to_owned()),
        Some(e) => {
            let late = interval
                .map(|i| (now - e.manifest.finished_at).num_seconds() as f64 > 1.5 * i)
                .unwrap_or(false);
            (
                age(now, e.manifest.finished_at),
                if late { " bad" } else { " good" },
                format!("newest {}", e.manifest.finished_at.format("%Y-%m-%d %H:%M")),
            )
        }
    }
}

/// The RTO tile (value, class, note): the measured time of the newest passed
/// restore drill of any of the job's backups, or why there is none.
fn rto_tile(entries: &[&Entry], drill_configured: bool) -> (String, &'static str, String) {
    let drill = entries
        .iter()
        .filter_map(|e| match e.level() {
            Level::RestoreTested(v) => Some(v),
            _ => None,
        })
        .max_by_key(|v| v.at);
    match drill {
        Some(v) => (
            secs(v.details["seconds"].as_f64().unwrap_or(0.0).max(0.0)),
            " good",
            format!("drilled {}", v.at.format("%Y-%m-%d")),
        ),
        None => (
            "untested".into(),
            " bad",
            if drill_configured {
                "drill configured, none passed yet".into()
            } else {
                "no drill configured".into()
            },
        ),
    }
}

/// The signature-chain findings (the first 20), when there are any.
fn findings_list(out: &mut String, findings: &[String]) {
    if !findings.is_empty() {
        out.push_str("<ul class=\"findings\">");
        for f in findings.iter().take(20) {
            let _ = write!(out, "<li>{}</li>", esc(f));
        }
        out.push_str("</ul>");
    }
}

/// The newest 12 backups in words: id, start, stored size, verification level.
fn newest_table(out: &mut String, entries: &[&Entry]) {
    let _ = write!(
        out,
        "<details><summary>newest {} backup(s)</summary><table><tr><th>backup</th><th>started</th><th>stored</th><th>verification</th></tr>",
        entries.len().min(12)
    );
    for e in entries.iter().rev().take(12) {
        let st = state_of(e);
        let lvl = e.level();
        let what = match &lvl {
            Level::Never => "never verified".to_owned(),
            Level::Failed(v) => format!(
                "FAILED {} ({}): {}",
                v.at.format("%Y-%m-%d %H:%M"),
                v.method,
                v.error.as_deref().unwrap_or("")
            ),
            Level::Checksum(v) => format!("checksum {}", v.at.format("%Y-%m-%d %H:%M")),
            Level::RestoreTested(v) => format!(
                "restore-tested {} (RTO {})",
                v.at.format("%Y-%m-%d"),
                secs(v.details["seconds"].as_f64().unwrap_or(0.0))
            ),
        };
        let _ = write!(
            out,
            "<tr data-backup=\"{}\" data-state=\"{st}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"s\"><i style=\"background:{}\"></i>{}</td></tr>",
            esc(&e.manifest.id),
            esc(&e.manifest.id),
            e.manifest.started_at.format("%Y-%m-%d %H:%M"),
            human_bytes(e.manifest.stored_bytes),
            colour(st),
            esc(&what)
        );
    }
    out.push_str("</table></details></section>");
}

const W: f64 = 700.0;
const H: f64 = 120.0;

fn timeline(out: &mut String, entries: &[&Entry], pruned: &[Tombstone], now: DateTime<Utc>) {
    // Pruned backups sit at their start time, parsed from the id.
    let pruned_at: Vec<(DateTime<Utc>, &Tombstone)> = pruned
        .iter()
        .filter_map(|t| {
            let stamp = t.id.split('-').next()?;
            let naive = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ").ok()?;
            Some((naive.and_utc(), t))
        })
        .collect();
    let times = entries
        .iter()
        .map(|e| e.manifest.started_at)
        .chain(pruned_at.iter().map(|p| p.0));
    let t0 = times
        .clone()
        .min()
        .unwrap_or(now - chrono::Duration::days(1));
    let t1 = now.max(t0 + chrono::Duration::minutes(1));
    let span = (t1 - t0).num_seconds().max(1) as f64;
    let x =
        |t: DateTime<Utc>| 24.0 + (W - 48.0) * ((t - t0).num_milliseconds() as f64 / 1000.0 / span);
    // Markers by time, but never on top of each other: at least 16 px
    // apart in order, squeezed back into the axis if that overflows.
    let mut marks: Vec<(DateTime<Utc>, Option<&Entry>, Option<&Tombstone>)> = entries
        .iter()
        .map(|e| (e.manifest.started_at, Some(*e), None))
        .chain(pruned_at.iter().map(|(t, tomb)| (*t, None, Some(*tomb))))
        .collect();
    marks.sort_by_key(|m| m.0);
    let mut xs: Vec<f64> = marks.iter().map(|m| x(m.0)).collect();
    for i in 1..xs.len() {
        xs[i] = xs[i].max(xs[i - 1] + 16.0);
    }
    if let Some(last) = xs.last().copied() {
        if last > W - 24.0 {
            let (a, b) = (xs[0], last);
            for v in xs.iter_mut() {
                *v = a + (*v - a) * ((W - 24.0 - a) / (b - a).max(1.0));
            }
        }
    }
    let _ = write!(
        out,
        "<div class=\"chart\"><h3>Backups over time</h3><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"timeline of backups\">\
<line x1=\"24\" y1=\"62\" x2=\"{}\" y2=\"62\" stroke=\"#e4e7ec\" stroke-width=\"2\"/>",
        W - 24.0
    );
    for ((_, e, tomb), cx) in marks.iter().zip(&xs) {
        if let Some(tomb) = tomb {
            let _ = write!(
                out,
                "<circle data-state=\"pruned\" cx=\"{cx:.1}\" cy=\"62\" r=\"6\" fill=\"#fff\" stroke=\"#c3c8d0\" stroke-width=\"2\"><title>{} pruned {}: {}</title></circle>",
                esc(&tomb.id),
                tomb.removed_at.format("%Y-%m-%d %H:%M"),
                esc(&tomb.reason)
            );
        }
        if let Some(e) = e {
            let st = state_of(e);
            let r = if st == "restore-tested" { 9.0 } else { 7.0 };
            let _ = write!(
                out,
                "<circle data-state=\"{st}\" data-backup=\"{}\" cx=\"{cx:.1}\" cy=\"62\" r=\"{r}\" fill=\"{}\" stroke=\"#fff\" stroke-width=\"2\"><title>{} · {} · {}</title></circle>",
                esc(&e.manifest.id),
                colour(st),
                esc(&e.manifest.id),
                human_bytes(e.manifest.stored_bytes),
                st
            );
        }
    }
    if marks.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"58\" text-anchor=\"middle\">no backups yet</text>",
            W / 2.0
        );
    }
    let _ = write!(
        out,
        "<text x=\"24\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">now · {}</text></svg></div>",
        H - 10.0,
        t0.format("%Y-%m-%d %H:%M"),
        W - 24.0,
        H - 10.0,
        now.format("%Y-%m-%d %H:%M")
    );
}

fn sizes(out: &mut String, entries: &[&Entry]) {
    let w = 460.0;
    let _ = write!(
        out,
        "<div class=\"chart\"><h3>Stored size per backup</h3><svg viewBox=\"0 0 {w} {H}\" role=\"img\" aria-label=\"stored size over time\">"
    );
    let shown: Vec<&&Entry> = entries
        .iter()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let max = shown
        .iter()
        .map(|e| e.manifest.stored_bytes)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = shown.len().max(1) as f64;
    let slot = (w - 20.0) / n;
    let bar = (slot * 0.7).clamp(2.0, 28.0);
    for (i, e) in shown.iter().enumerate() {
        let h = ((e.manifest.stored_bytes as f64 / max) * (H - 34.0)).max(2.0);
        let st = state_of(e);
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" rx=\"2\" fill=\"{}\"><title>{} · {}</title></rect>",
            10.0 + i as f64 * slot + (slot - bar) / 2.0,
            H - 20.0 - h,
            colour(st),
            esc(&e.manifest.id),
            human_bytes(e.manifest.stored_bytes)
        );
    }
    if shown.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"58\" text-anchor=\"middle\">nothing stored</text>",
            w / 2.0
        );
    }
    let _ = write!(
        out,
        "<text x=\"10\" y=\"12\">max {}</text><line x1=\"10\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#e4e7ec\"/></svg></div>",
        human_bytes(max as u64),
        w - 10.0,
        y = H - 20.0
    );
}
