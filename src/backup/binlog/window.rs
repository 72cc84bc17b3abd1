//! Continuity: which points in time can be restored, and every gap, named.
//! Pure functions over manifests (the clock is never read here).
//!
//! Segments form a continuous run while each one starts where the previous
//! ended: the next seq, a chain link to the previous manifest's exact bytes,
//! a GTID start at or before the previous GTID end (a repeat is fine, a hole
//! is not), the same file offset within one source file, and its artifact
//! present. A window is the span of a run that starts at a kept base
//! backup's GTID position.
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::backup::catalog::gtid::{Gtid, GtidState};
use crate::backup::catalog::segment::{Archive, Listed};
use crate::backup::catalog::Catalog;
use crate::error::Result;

/// A base backup as PITR sees it: its consistent GTID position.
#[derive(Debug, Clone)]
pub struct Base {
    pub id: String,
    pub gtid: GtidState,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gap {
    /// missing-segment, chain-broken, gtid-hole, timeline-switch-hole,
    /// position-hole, artifact-missing, purged, unreadable-manifest, no-base.
    pub kind: String,
    pub after_seq: Option<u64>,
    pub before_seq: Option<u64>,
    /// Archived up to here, resumes from there (GTID positions).
    pub from_gtid: String,
    pub to_gtid: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Window {
    /// The earliest restorable time (second precision, see `replay`).
    pub from: DateTime<Utc>,
    /// Restorable up to (excluding) the second after the newest archived commit.
    pub to: DateTime<Utc>,
    pub newest_commit: DateTime<Utc>,
    pub base: String,
    pub bases: Vec<String>,
    pub from_gtid: String,
    pub to_gtid: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub timelines: Vec<u32>,
}

/// A maximal sequence of segments with no hole (indexes into `Archive::segments`).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub first: usize,
    pub last: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub job: String,
    pub windows: Vec<Window>,
    pub gaps: Vec<Gap>,
    pub segments: usize,
    pub stored_bytes: u64,
    pub newest_commit: Option<DateTime<Utc>>,
    pub orphans: usize,
}

fn seg_gap(kind: &str, prev: Option<&Listed>, next: Option<&Listed>, detail: String) -> Gap {
    Gap {
        kind: kind.into(),
        after_seq: prev.map(|p| p.manifest.seq),
        before_seq: next.map(|n| n.manifest.seq),
        from_gtid: prev
            .map(|p| p.manifest.gtid_end.to_string())
            .unwrap_or_default(),
        to_gtid: next
            .map(|n| n.manifest.gtid_start.to_string())
            .unwrap_or_default(),
        detail,
    }
}

/// Why `next` does not continue `prev`, if it does not.
pub fn break_between(a: &Archive, prev: &Listed, next: &Listed) -> Option<Gap> {
    let (p, n) = (&prev.manifest, &next.manifest);
    if let Some(g) = a.gaps.iter().find(|g| g.after_seq == Some(p.seq)) {
        return Some(seg_gap(
            "purged",
            Some(prev),
            Some(next),
            format!(
                "binlog {} was no longer on the server when the archiver needed it: {}",
                if g.file.is_empty() {
                    "(first)"
                } else {
                    &g.file
                },
                g.reason
            ),
        ));
    }
    if n.seq != p.seq + 1 {
        return Some(seg_gap(
            "missing-segment",
            Some(prev),
            Some(next),
            if n.seq == p.seq + 2 {
                format!("segment {} is missing from the store", p.seq + 1)
            } else {
                format!(
                    "segments {}..{} are missing from the store",
                    p.seq + 1,
                    n.seq - 1
                )
            },
        ));
    }
    match &n.previous {
        Some(l) if l.id == p.seq.to_string() && l.manifest_sha256 == prev.manifest_sha256 => {}
        Some(l) if l.id == p.seq.to_string() => {
            return Some(seg_gap("chain-broken", Some(prev), Some(next), format!("segment {} was altered or replaced after segment {} was written (manifest sha256 differs)", p.seq, n.seq)))
        }
        _ => {
            return Some(seg_gap("chain-broken", Some(prev), Some(next), format!("segment {} does not link to segment {}", n.seq, p.seq)))
        }
    }
    let hole: Vec<String> = n
        .gtid_start
        .0
        .values()
        .filter(|g| g.seq > p.gtid_end.seq(g.domain))
        .map(|g| {
            format!(
                "domain {} after {} up to {}",
                g.domain,
                p.gtid_end
                    .0
                    .get(&g.domain)
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "its start".into()),
                g
            )
        })
        .collect();
    if !hole.is_empty() {
        let kind = if n.timeline != p.timeline {
            "timeline-switch-hole"
        } else {
            "gtid-hole"
        };
        return Some(seg_gap(
            kind,
            Some(prev),
            Some(next),
            format!("transactions not archived: {}", hole.join("; ")),
        ));
    }
    if n.timeline == p.timeline && n.file == p.file && n.start_pos > p.end_pos {
        return Some(seg_gap(
            "position-hole",
            Some(prev),
            Some(next),
            format!(
                "{} bytes {}..{} of {} not archived",
                n.start_pos - p.end_pos,
                p.end_pos,
                n.start_pos,
                n.file
            ),
        ));
    }
    None
}

/// Splits the archive into continuous runs and the gaps between them.
pub fn runs(a: &Archive) -> (Vec<Run>, Vec<Gap>) {
    let mut runs = Vec::new();
    let mut gaps = Vec::new();
    let mut cur: Option<Run> = None;
    for (i, s) in a.segments.iter().enumerate() {
        if !s.artifact_present {
            gaps.push(seg_gap(
                "artifact-missing",
                Some(s),
                Some(s),
                format!(
                    "segment {} has a manifest but its object {} is missing",
                    s.manifest.seq, s.manifest.key
                ),
            ));
            if let Some(r) = cur.take() {
                runs.push(r);
            }
            continue;
        }
        match cur.as_mut() {
            Some(r) if r.last + 1 == i => match break_between(a, &a.segments[r.last], s) {
                None => r.last = i,
                Some(g) => {
                    gaps.push(g);
                    runs.push(cur.take().unwrap());
                    cur = Some(Run { first: i, last: i });
                }
            },
            Some(_) => {
                runs.push(cur.take().unwrap());
                cur = Some(Run { first: i, last: i });
            }
            None => {
                if i > 0 {
                    // After a missing artifact: say what the segment before had.
                } else if let Some(g) = a.gaps.iter().find(|g| g.after_seq.is_none()) {
                    gaps.push(Gap {
                        kind: "purged".into(),
                        after_seq: None,
                        before_seq: Some(s.manifest.seq),
                        from_gtid: String::new(),
                        to_gtid: s.manifest.gtid_start.to_string(),
                        detail: g.reason.clone(),
                    });
                }
                cur = Some(Run { first: i, last: i });
            }
        }
    }
    if let Some(r) = cur {
        runs.push(r);
    }
    // A gap recorded after the newest segment (the archiver stopped there).
    if let Some(last) = a.segments.last() {
        for g in a
            .gaps
            .iter()
            .filter(|g| g.after_seq == Some(last.manifest.seq))
        {
            gaps.push(seg_gap("purged", Some(last), None, g.reason.clone()));
        }
    }
    for (k, e) in &a.broken {
        gaps.push(Gap {
            kind: "unreadable-manifest".into(),
            after_seq: None,
            before_seq: None,
            from_gtid: String::new(),
            to_gtid: String::new(),
            detail: format!("{k}: {e}"),
        });
    }
    (runs, gaps)
}

/// The commit second of `g`'s transaction, if a segment of the run has it.
fn stamp_of(a: &Archive, r: &Run, g: &Gtid) -> Option<i64> {
    for s in &a.segments[r.first..=r.last] {
        for run in &s.manifest.runs {
            if let Ok(l) = run.last.parse::<Gtid>() {
                if l.domain == g.domain && l.seq >= g.seq {
                    // `run` holds g when its first seq is at or before g.
                    return Some(run.ts);
                }
            }
        }
    }
    None
}

/// True when `b`'s position lies inside run `r`.
pub fn covers(a: &Archive, r: &Run, b: &GtidState) -> bool {
    let first = &a.segments[r.first].manifest;
    let last = &a.segments[r.last].manifest;
    first.gtid_start.le(b) && b.le(&last.gtid_end)
}

/// The earliest time a restore from base `b` can target in run `r`.
pub fn earliest(a: &Archive, r: &Run, b: &Base) -> DateTime<Utc> {
    let first = &a.segments[r.first].manifest;
    let mut t: Option<i64> = None;
    for g in b.gtid.0.values() {
        if g.seq > first.gtid_start.seq(g.domain) {
            if let Some(s) = stamp_of(a, r, g) {
                t = Some(t.map_or(s + 1, |x: i64| x.max(s + 1)));
            }
        }
    }
    match t {
        Some(s) => Utc.timestamp_opt(s, 0).single().unwrap_or(b.started_at),
        None => b.started_at,
    }
}

pub fn newest_commit(a: &Archive, r: &Run) -> Option<DateTime<Utc>> {
    a.segments[r.first..=r.last]
        .iter()
        .filter_map(|s| s.manifest.last_commit)
        .max()
}

/// Windows and gaps of one job. `bases` are the kept base backups.
pub fn report(job: &str, a: &Archive, bases: &[Base]) -> Report {
    let (runs, mut gaps) = runs(a);
    let mut windows = Vec::new();
    for r in &runs {
        let covered: Vec<&Base> = bases.iter().filter(|b| covers(a, r, &b.gtid)).collect();
        let first = &a.segments[r.first];
        let last = &a.segments[r.last];
        let Some(newest) = newest_commit(a, r) else {
            continue;
        };
        if covered.is_empty() {
            gaps.push(Gap {
                kind: "no-base".into(),
                after_seq: None,
                before_seq: Some(first.manifest.seq),
                from_gtid: first.manifest.gtid_start.to_string(),
                to_gtid: last.manifest.gtid_end.to_string(),
                detail: format!(
                    "segments {}..{} have no base backup at or after their start: take a backup of the job to make them restorable",
                    first.manifest.seq, last.manifest.seq
                ),
            });
            continue;
        }
        let from = covered
            .iter()
            .map(|b| (earliest(a, r, b), *b))
            .min_by_key(|x| x.0)
            .expect("not empty");
        let mut timelines: Vec<u32> = a.segments[r.first..=r.last]
            .iter()
            .map(|s| s.manifest.timeline)
            .collect();
        timelines.dedup();
        windows.push(Window {
            from: from.0,
            to: newest + chrono::Duration::seconds(1),
            newest_commit: newest,
            base: from.1.id.clone(),
            bases: covered.iter().map(|b| b.id.clone()).collect(),
            from_gtid: from.1.gtid.to_string(),
            to_gtid: last.manifest.gtid_end.to_string(),
            first_seq: first.manifest.seq,
            last_seq: last.manifest.seq,
            timelines,
        });
    }
    // Bases older than the whole archive: binlog not archived from there.
    if let Some(first) = a.segments.first() {
        for b in bases {
            if !first.manifest.gtid_start.le(&b.gtid) {
                gaps.push(Gap {
                    kind: "before-archive".into(),
                    after_seq: None,
                    before_seq: Some(first.manifest.seq),
                    from_gtid: b.gtid.to_string(),
                    to_gtid: first.manifest.gtid_start.to_string(),
                    detail: format!("base backup {} ({}) predates the archive, which starts at {}: it cannot be rolled forward", b.id, b.gtid, first.manifest.gtid_start),
                });
            }
        }
    }
    Report {
        job: job.into(),
        windows,
        gaps,
        segments: a.segments.len(),
        stored_bytes: a.segments.iter().map(|s| s.manifest.stored_bytes).sum(),
        newest_commit: a
            .segments
            .iter()
            .filter_map(|s| s.manifest.last_commit)
            .max(),
        orphans: a.orphans.len(),
    }
}

/// `catalog pitr` as text.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "job {}: {} segment(s), {} bytes stored, newest archived commit {}; {} window(s), {} gap(s)",
        r.job,
        r.segments,
        r.stored_bytes,
        r.newest_commit.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()),
        r.windows.len(),
        r.gaps.len()
    );
    for w in &r.windows {
        let _ = writeln!(
            s,
            "  window {} .. {}  base {} ({} → {}), segments {}..{}, timeline(s) {:?}",
            w.from.to_rfc3339(),
            w.to.to_rfc3339(),
            w.base,
            w.from_gtid,
            w.to_gtid,
            w.first_seq,
            w.last_seq,
            w.timelines
        );
    }
    for g in &r.gaps {
        let _ = writeln!(
            s,
            "  GAP {} after segment {} before {}: {}",
            g.kind,
            g.after_seq
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            g.before_seq
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            g.detail
        );
    }
    if r.orphans > 0 {
        let _ = writeln!(
            s,
            "  {} segment object(s) without a manifest (interrupted; prune removes them)",
            r.orphans
        );
    }
    s
}

/// The job's mysql backups that recorded a GTID position (PITR bases),
/// read from the catalog (the one function here that does I/O).
pub async fn bases(cat: &Catalog, job: &str) -> Result<Vec<Base>> {
    let mut out = Vec::new();
    for e in cat.list(Some(job)).await? {
        let m = &e.manifest;
        if m.kind != "mysql" {
            continue;
        }
        let g = m.details["binlog"]["gtid_set"].as_str().unwrap_or("");
        if m.details["binlog"]["enabled"] != serde_json::json!(true) {
            continue;
        }
        match GtidState::parse(g) {
            Ok(gtid) => out.push(Base {
                id: m.id.clone(),
                gtid,
                started_at: m.started_at,
            }),
            Err(err) => {
                tracing::warn!(backup = %m.id, error = %err, "backup has an unreadable GTID position; not usable as a PITR base")
            }
        }
    }
    Ok(out)
}
