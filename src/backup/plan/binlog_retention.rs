//! Prune of the binlog archive: keep every segment needed to reach any
//! point after the oldest kept base backup (plus the job's `binlog.keep`
//! window); remove the older ones and segment objects a crash left without
//! a manifest. Planning is pure (the clock is passed in).
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backup::binlog::window::{self, Base};
use crate::backup::catalog::segment::{self, Archive};
use crate::backup::catalog::Catalog;
use crate::error::{one_line, Result};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Plan {
    /// Segments to remove (seq), oldest first.
    pub remove: Vec<u64>,
    /// The oldest segment kept, and why.
    pub kept_from: Option<u64>,
    pub reason: String,
    /// Objects without a manifest, behind the newest segment (interrupted uploads).
    pub orphans: Vec<String>,
    /// The oldest kept base is past the newest segment: the archiver has
    /// not reached it yet (a prune right after a backup), so nothing is
    /// removed now; a later plan, once the archive covers it, will.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub base_ahead: bool,
}

/// `bases`: the base backups that prune keeps.
pub fn plan(a: &Archive, bases: &[Base], keep: Option<Duration>, now: DateTime<Utc>) -> Plan {
    let mut p = Plan::default();
    let newest = a.newest().map(|s| s.manifest.seq).unwrap_or(0);
    p.orphans = a
        .orphans
        .iter()
        .filter(|o| seq_of_key(&o.key).map(|s| s <= newest).unwrap_or(false))
        .map(|o| o.key.clone())
        .collect();
    let Some(oldest) = bases.iter().min_by_key(|b| (b.started_at, b.id.clone())) else {
        p.reason = "no base backup: every segment is kept".into();
        return p;
    };
    let (runs, _) = window::runs(a);
    let Some(run) = runs.iter().find(|r| window::covers(a, r, &oldest.gtid)) else {
        // Not covered, though the newest run starts before it: it ends before it.
        p.base_ahead = runs
            .last()
            .is_some_and(|r| a.segments[r.first].manifest.gtid_start.le(&oldest.gtid));
        p.reason = format!(
            "the oldest kept base {} is not inside the archive: every segment is kept",
            oldest.id
        );
        return p;
    };
    // The first segment holding a transaction after the base's position.
    let first_needed = a.segments[run.first..=run.last]
        .iter()
        .find(|s| !s.manifest.gtid_end.le(&oldest.gtid))
        .map(|s| s.manifest.seq)
        .unwrap_or(a.segments[run.last].manifest.seq);
    let cutoff = keep
        .and_then(|k| chrono::Duration::from_std(k).ok())
        .map(|k| now - k);
    for s in &a.segments {
        let m = &s.manifest;
        if m.seq >= first_needed {
            break;
        }
        if let Some(c) = cutoff {
            if m.closed_at >= c {
                break; // inside the binlog.keep window: it and everything after
            }
        }
        p.remove.push(m.seq);
    }
    p.kept_from = a
        .segments
        .iter()
        .map(|s| s.manifest.seq)
        .find(|q| !p.remove.contains(q));
    p.reason = format!(
        "the oldest kept base {} needs segments from {first_needed} on",
        oldest.id
    );
    p
}

fn seq_of_key(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.get(..12)?.parse().ok()
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub job: String,
    pub plan: Plan,
    pub removed: Vec<u64>,
    pub orphans_removed: Vec<String>,
    pub errors: Vec<String>,
}

/// Applies the plan (unless `dry_run`). A segment's manifest goes first:
/// the segment stops existing at once, and a crash leaves at most an
/// orphan object, which the next prune removes.
pub async fn prune(
    cat: &Catalog,
    job: &str,
    keep: Option<Duration>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Report> {
    let a = segment::load(cat, job, false).await?;
    let bases = window::bases(cat, job).await?;
    let p = plan(&a, &bases, keep, now);
    let mut r = Report {
        job: job.into(),
        plan: p.clone(),
        ..Report::default()
    };
    if dry_run {
        return Ok(r);
    }
    let st = cat.store();
    for seq in &p.remove {
        let s = a
            .segments
            .iter()
            .find(|s| s.manifest.seq == *seq)
            .expect("planned from this archive");
        let res = async {
            st.delete(&s.manifest_key).await?;
            st.delete(&format!("{}.sig", s.manifest_key)).await?;
            st.delete(&s.manifest.key).await
        }
        .await;
        match res {
            Ok(()) => r.removed.push(*seq),
            Err(e) => {
                r.errors.push(format!("segment {seq}: {}", one_line(&e)));
                break; // never leave a hole in the middle: stop at the first failure
            }
        }
    }
    for k in &p.orphans {
        match st.delete(k).await {
            Ok(()) => r.orphans_removed.push(k.clone()),
            Err(e) => r.errors.push(format!("{k}: {}", one_line(&e))),
        }
    }
    Ok(r)
}

pub fn render(r: &Report, dry_run: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let n = if dry_run {
        r.plan.remove.len()
    } else {
        r.removed.len()
    };
    let mut s = format!(
        "{}: binlog archive: {verb} {n} segment(s){}; {}\n",
        r.job,
        match (r.plan.remove.first(), r.plan.remove.last()) {
            (Some(a), Some(b)) => format!(" ({a}..{b})"),
            _ => String::new(),
        },
        r.plan.reason
    );
    let o = if dry_run {
        r.plan.orphans.len()
    } else {
        r.orphans_removed.len()
    };
    if o > 0 {
        s.push_str(&format!(
            "{}: binlog archive: {verb} {o} object(s) without a manifest\n",
            r.job
        ));
    }
    for e in &r.errors {
        s.push_str(&format!("{}: binlog archive: ERROR {e}\n", r.job));
    }
    s
}
