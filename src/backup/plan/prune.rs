//! Applying retention: `retention::plan` decides, this module deletes.
//!
//! Order inside one backup: the manifest first, then its verification
//! records, then its artifacts (restic's `forget` then `prune`). The moment
//! the manifest is gone the backup is no longer listed, so an interrupted
//! prune or a store that goes down half-way never leaves a listed backup
//! without data; what is left behind is an incomplete folder (objects
//! without a manifest), which the next prune removes. If the manifest
//! cannot be deleted (Object Lock), nothing else of that backup is touched.
//!
//! Also removed: incomplete backups (folders without a manifest whose id is
//! older than the grace period) and, on S3, multipart uploads started
//! before the grace period and never finished.
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::backup::catalog::{Catalog, Damaged, Entry, Folder, Status};
use crate::backup::plan::retention::{self, Decision, Keep, Snapshot};
use crate::error::{one_line, Error, Result};
use crate::store::{is_locked_delete, PendingUpload};

/// Folders without a manifest younger than this may be a backup in progress.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    pub grace: Duration,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize)]
pub struct JobReport {
    pub job: String,
    pub decisions: Vec<Decision>,
    /// Backups whose manifest is gone (all their objects too, unless listed
    /// in `locked` or `errors`).
    pub removed: Vec<String>,
    /// Incomplete backup folders (no manifest, older than the grace period).
    pub incomplete: Vec<String>,
    pub locked: Vec<LockedObject>,
    /// Backup folders whose manifest cannot be used: while there is one,
    /// nothing of the job is deleted (retention cannot count it).
    pub damaged: Vec<Damaged>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockedObject {
    pub key: String,
    /// From the object's retention, when the store reports it.
    pub until: Option<DateTime<Utc>>,
}

impl std::fmt::Display for LockedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.until {
            Some(t) => write!(f, "{} is locked until {}", self.key, t.to_rfc3339()),
            None => write!(f, "{} is locked (retention date unknown)", self.key),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct UploadsReport {
    pub aborted: Vec<PendingUpload>,
    pub errors: Vec<String>,
}

/// The grace period as a calendar duration; out of range is a usage error
/// (the CLI's parser caps it, library callers may not).
fn grace_of(d: Duration) -> Result<chrono::Duration> {
    chrono::Duration::from_std(d)
        .ok()
        .filter(|_| d <= crate::base::duration::MAX)
        .ok_or_else(|| {
            Error::Usage(format!(
                "--grace {}s is out of range (at most 100 years)",
                d.as_secs()
            ))
        })
}

/// The time encoded in a backup id (`20261125T192342.001Z-abc123`).
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let stamp = id.split('-').next()?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ")
        .ok()
        .map(|n| n.and_utc())
}

enum Outcome {
    Done,
    Locked(LockedObject),
}

async fn delete(catalog: &Catalog, key: &str) -> Result<Outcome> {
    let store = catalog.store();
    match store.delete(key).await {
        Ok(()) => Ok(Outcome::Done),
        Err(e) if is_locked_delete(&e) => {
            let until = store.locked_until(key).await.ok().flatten();
            Ok(Outcome::Locked(LockedObject {
                key: key.to_owned(),
                until,
            }))
        }
        Err(e) => Err(e),
    }
}

/// Deletes one folder's objects: manifest first, then the rest. Stops at
/// the first error (the store may be down: the caller stops too).
async fn delete_folder(
    catalog: &Catalog,
    f: &Folder,
    now: DateTime<Utc>,
    report: &mut JobReport,
) -> Result<bool> {
    // Under Object Lock a plain DELETE on a versioned bucket "succeeds" by
    // adding a delete marker: the backup would vanish from the catalog while
    // its locked data stays. Ask for the retention date first and leave a
    // locked backup whole and listed.
    let first = f
        .manifest
        .clone()
        .or_else(|| f.others.first().map(|o| o.key.clone()));
    if let Some(key) = first {
        if let Some(until) = catalog.store().locked_until(&key).await? {
            if until > now {
                report.locked.push(LockedObject {
                    key,
                    until: Some(until),
                });
                return Ok(false);
            }
        }
    }
    if let Some(m) = &f.manifest {
        if let Outcome::Locked(l) = delete(catalog, m).await? {
            report.locked.push(l);
            return Ok(false);
        }
    }
    let rest = f
        .verifications
        .iter()
        .cloned()
        .chain(f.others.iter().map(|o| o.key.clone()));
    for key in rest {
        if let Outcome::Locked(l) = delete(catalog, &key).await? {
            report.locked.push(l);
        }
    }
    Ok(true)
}

/// What prune needs of a job: its name and its retention rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub name: &'a str,
    pub keep: &'a Keep,
}

/// Plans (and unless dry-run applies) retention for one job. A store
/// failure stops this job's prune and is reported in `errors`; the catalog
/// stays consistent (see the module comment).
/// `job`: the job's name and its retention rules.
pub async fn prune_job(catalog: &Catalog, job: Rules<'_>, opts: &Options) -> Result<JobReport> {
    let mut report = JobReport {
        job: job.name.to_owned(),
        ..JobReport::default()
    };
    let grace = grace_of(opts.grace)?;
    let folders = catalog.folders(Some(job.name)).await?;
    let (entries, damaged) = catalog.scan(Some(job.name)).await?;
    report.decisions = decide(&entries, job.keep, opts.now);
    if !damaged.is_empty() {
        // Deleting "around" a backup retention cannot see could remove the
        // last good copy next to it: stop, loudly.
        report.errors.push(damaged_error(&damaged, job.name));
        report.damaged = damaged;
        return Ok(report);
    }
    let incomplete = incomplete_folders(&folders, grace, opts.now);
    if opts.dry_run {
        report.incomplete = incomplete.iter().map(|(d, _)| (*d).clone()).collect();
        return Ok(report);
    }
    // The first failure stops the job's prune (the store may be down).
    if let Err(e) =
        remove_expired(catalog, job.name, &folders, &entries, opts.now, &mut report).await
    {
        report.errors.push(e);
        return Ok(report);
    }
    if let Err(e) = remove_incomplete(catalog, job.name, incomplete, opts.now, &mut report).await {
        report.errors.push(e);
    }
    Ok(report)
}

/// Retention's decisions over the job's listed backups: the newest verified
/// one, and the bases that kept incrementals need, are kept.
fn decide(entries: &[Entry], keep: &Keep, now: DateTime<Utc>) -> Vec<Decision> {
    let snapshots: Vec<Snapshot> = entries
        .iter()
        .map(|e| Snapshot {
            id: e.manifest.id.clone(),
            time: e.manifest.started_at,
        })
        .collect();
    let newest_verified = entries
        .iter()
        .filter(|e| e.latest_verification().map(|v| v.status) == Some(Status::Ok))
        .max_by_key(|e| (e.manifest.started_at, e.manifest.id.clone()))
        .map(|e| e.manifest.id.clone());
    let mut decisions = retention::plan(&snapshots, keep, now, newest_verified.as_deref());
    let needs: Vec<(String, Vec<String>)> = entries
        .iter()
        .map(|e| (e.manifest.id.clone(), e.manifest.depends_on()))
        .filter(|(_, d)| !d.is_empty())
        .collect();
    retention::keep_needed(&mut decisions, &needs);
    decisions
}

/// Why nothing of the job is deleted while it has damaged folders.
fn damaged_error(damaged: &[Damaged], job: &str) -> String {
    format!(
        "{} damaged backup folder(s) ({}); nothing of job {} deleted until they are repaired or removed by hand",
        damaged.len(),
        damaged
            .iter()
            .map(|d| format!("{}: {}", d.folder, d.error))
            .collect::<Vec<_>>()
            .join("; "),
        job
    )
}

/// Folders without a manifest whose id is older than the grace period.
fn incomplete_folders(
    folders: &BTreeMap<String, Folder>,
    grace: chrono::Duration,
    now: DateTime<Utc>,
) -> Vec<(&String, &Folder)> {
    folders
        .iter()
        .filter(|(dir, f)| {
            f.manifest.is_none()
                && dir
                    .rsplit('/')
                    .next()
                    .and_then(id_time)
                    .is_some_and(|t| now - t > grace)
        })
        .collect()
}

/// Removes the backups retention does not keep, each after a signed
/// record of its removal. Err: the message of the failure that stopped it.
async fn remove_expired(
    catalog: &Catalog,
    job: &str,
    folders: &BTreeMap<String, Folder>,
    entries: &[Entry],
    now: DateTime<Utc>,
    report: &mut JobReport,
) -> std::result::Result<(), String> {
    let by_id = |id: &str| {
        folders
            .iter()
            .find(|(dir, _)| dir.rsplit('/').next() == Some(id))
    };
    let remove: Vec<String> = report
        .decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.clone())
        .collect();
    for id in remove {
        let Some((_, f)) = by_id(&id) else { continue };
        // A signed record first, so the gap this leaves in the job's chain
        // of manifests is explained (`catalog verify-signatures`).
        if let Some(e) = entries.iter().find(|e| e.manifest.id == id) {
            let reasons = report
                .decisions
                .iter()
                .find(|d| d.id == id)
                .map(|d| d.reasons.join("; "))
                .unwrap_or_default();
            if let Err(err) = catalog
                .record_removal(e, &format!("retention: {reasons}"))
                .await
            {
                return Err(format!("recording the removal of {id}: {}", one_line(&err)));
            }
        }
        match delete_folder(catalog, f, now, report).await {
            Ok(true) => {
                tracing::info!(job = %job, id = %id, "backup removed by retention");
                report.removed.push(id);
            }
            Ok(false) => {}
            Err(e) => return Err(format!("removing {id}: {}", one_line(&e))),
        }
    }
    Ok(())
}

/// Removes the incomplete folders. Err: the message of the failure that
/// stopped it.
async fn remove_incomplete(
    catalog: &Catalog,
    job: &str,
    incomplete: Vec<(&String, &Folder)>,
    now: DateTime<Utc>,
    report: &mut JobReport,
) -> std::result::Result<(), String> {
    for (dir, f) in incomplete {
        match delete_folder(catalog, f, now, report).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(job = %job, folder = %dir, "incomplete backup removed");
                report.incomplete.push(dir.clone());
            }
            Err(e) => return Err(format!("removing incomplete {dir}: {}", one_line(&e))),
        }
    }
    Ok(())
}

/// Aborts S3 multipart uploads under `prefix` older than the grace period.
pub async fn stale_uploads(
    catalog: &Catalog,
    prefix: &str,
    opts: &Options,
) -> Result<UploadsReport> {
    let grace = grace_of(opts.grace)?;
    let store = catalog.store();
    let stale = store.stale_uploads(prefix, opts.now - grace).await?;
    let mut report = UploadsReport::default();
    for u in stale {
        if opts.dry_run {
            report.aborted.push(u);
            continue;
        }
        match store.abort_upload(&u).await {
            Ok(()) => report.aborted.push(u),
            Err(e) => report.errors.push(one_line(&e)),
        }
    }
    Ok(report)
}

/// `prune` text output for one job.
pub fn render_job(r: &JobReport, dry_run: bool) -> String {
    let mut out = format!(
        "job {}: {} backup(s), keep {}, remove {}{}\n",
        r.job,
        r.decisions.len(),
        r.decisions.iter().filter(|d| d.keep).count(),
        r.decisions.iter().filter(|d| !d.keep).count(),
        if dry_run {
            " (dry run: nothing deleted)"
        } else {
            ""
        }
    );
    for d in &r.decisions {
        out.push_str(&format!(
            "  {}  {:<6}  {}\n",
            d.id,
            if d.keep { "keep" } else { "remove" },
            d.reasons.join(", ")
        ));
    }
    for dir in &r.incomplete {
        out.push_str(&format!(
            "  incomplete {dir}: {}\n",
            if dry_run {
                "would be removed"
            } else {
                "removed"
            }
        ));
    }
    for l in &r.locked {
        out.push_str(&format!("  {l}\n"));
    }
    for d in &r.damaged {
        out.push_str(&format!("  DAMAGED {}: {}\n", d.folder, d.error));
    }
    for e in &r.errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    out
}

/// An error for callers that need one (the daemon, exit codes).
pub fn failure(r: &JobReport) -> Option<Error> {
    r.errors.first().map(|e| Error::Store {
        store: "-".into(),
        op: "prune",
        key: r.job.clone(),
        msg: e.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_times_parse() {
        let t = id_time("20261125T192342.001Z-abc123").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T19:23:42.001+00:00");
        assert!(id_time("notes").is_none());
    }
}
