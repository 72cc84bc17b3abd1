//! One backup run of one job: source → pipeline → store, manifest last.
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::backup::catalog::{self, Artifact, Catalog, Manifest};
use crate::backup::lease;
use crate::backup::policy::Job;
use crate::backup::source;
use crate::base::progress::{self, Total, Unit};
use crate::error::{one_line, Error, Result};
use crate::pipeline;
use crate::store::DynStore;

/// Runs one backup of `job` into `store` (unsigned catalog entries).
pub async fn run(store: DynStore, job: &Job, cancel: CancellationToken) -> Result<Manifest> {
    run_into(&Catalog::new(store), job, cancel).await
}

/// Runs one backup of `job` into the catalog's store. On any failure
/// (including cancellation) nothing is listed: artifacts already written
/// are deleted and no manifest is written.
///
/// Holds the job's lease (`lock.rs`) for the whole run: a second run of the
/// same job, here or on another host, fails with `Error::Locked` (exit 3).
pub async fn run_into(cat: &Catalog, job: &Job, cancel: CancellationToken) -> Result<Manifest> {
    // A missing bucket or bad credentials are reported as such, not as a
    // failure to write the lease.
    cat.store()
        .preflight()
        .await
        .map_err(|e| e.in_job(&job.name))?;
    lease::with_lease(
        cat.store().clone(),
        &job.name,
        lease::DEFAULT_TTL,
        cancel,
        |token| run_held(cat, job, token),
    )
    .await
    .map_err(|e| e.in_job(&job.name))
}

/// After a cancel (Ctrl-C, timeout), how long a run may take to clean up
/// (abort uploads, delete artifacts) before its future is dropped; a hung
/// store call would otherwise never return. Dropping still cleans up: the
/// stores' guards abort the multipart upload / remove the temporary file.
pub const CLEANUP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// `run_into` for a caller that already holds the job's lease (the daemon
/// holds it across backup and prune). Applies the job's `timeout`.
pub async fn run_held(cat: &Catalog, job: &Job, cancel: CancellationToken) -> Result<Manifest> {
    // Cancel through the token so that uploads abort cleanly.
    let token = cancel.child_token();
    let timer = job.timeout.map(|limit| {
        let token = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            token.cancel();
        })
    });
    let fut = run_inner(cat, job, token.clone());
    tokio::pin!(fut);
    let r = tokio::select! {
        r = &mut fut => r,
        _ = async {
            token.cancelled().await;
            tokio::time::sleep(CLEANUP_GRACE).await;
        } => {
            tracing::error!(job = %job.name, "the run did not stop within {}s of being cancelled; abandoning it (a leftover incomplete folder is removed by prune)", CLEANUP_GRACE.as_secs());
            Err(Error::Interrupted)
        }
    };
    if let Some(t) = timer {
        t.abort();
    }
    let r = match (r, job.timeout) {
        (Err(Error::Interrupted), Some(limit))
            if token.is_cancelled() && !cancel.is_cancelled() =>
        {
            Err(Error::Timeout {
                after: crate::base::human_duration(limit),
            })
        }
        (r, _) => r,
    };
    r.map_err(|e| e.in_job(&job.name))
}

async fn run_inner(cat: &Catalog, job: &Job, cancel: CancellationToken) -> Result<Manifest> {
    let store = cat.store().clone();
    let t0 = Instant::now();
    store.preflight().await?;
    let started_at = Utc::now();
    let id = catalog::new_id(started_at);
    let dir = catalog::backup_dir(&job.name, &id, started_at);
    tracing::info!(job = %job.name, id = %id, store = %store.describe(), "backup started");

    let job = &with_base(cat, job).await?;
    let opened = open_source(job, &cancel).await?;
    let task = progress::begin(
        cat.progress(),
        &format!("backup {}", job.name),
        estimate(cat, job).await,
        Unit::Bytes,
    );
    let up = Uploader::new(cat, job, &dir, cancel.clone())?;
    let mut outcomes = up.all(opened.extracts).await;
    let late = match opened.parts {
        Some(parts) => {
            let (more, finish) = up.parts(parts).await;
            outcomes.extend(more);
            Some(finish)
        }
        None => None,
    };
    let stored = collect(outcomes, late, &cancel);
    if let Some(e) = stored.error {
        remove_written(&store, stored.written).await;
        return Err(e);
    }

    let details = merge_details(opened.details, stored.details);
    let manifest = record(
        cat,
        job,
        Recorded {
            id,
            started_at,
            artifacts: stored.artifacts,
            warnings: stored.warnings,
            details,
            encryption: up.encryption,
        },
    )
    .await?;
    task.done();
    tracing::info!(
        job = %job.name, id = %manifest.id,
        source_bytes = manifest.source_bytes, stored_bytes = manifest.stored_bytes,
        seconds = t0.elapsed().as_secs_f64(), "backup finished"
    );
    Ok(manifest)
}

/// An incremental physical run continues the job's newest physical backup,
/// looked up here, under the job's lease, so that two runs cannot both
/// continue the same parent unseen.
async fn with_base<'a>(cat: &Catalog, job: &'a Job) -> Result<std::borrow::Cow<'a, Job>> {
    use source::mysql::physical::{incremental_base, Level};
    let wants = matches!(&job.source, source::kinds::SourceSpec::Mysql(s)
        if s.physical.as_ref().is_some_and(|p| p.level == Level::Incremental));
    if !wants {
        return Ok(std::borrow::Cow::Borrowed(job));
    }
    let base = incremental_base(cat, &job.name).await?;
    tracing::info!(job = %job.name, parent = %base.parent, lsn = base.lsn, "incremental backup");
    let mut job = job.clone();
    if let source::kinds::SourceSpec::Mysql(s) = &mut job.source {
        if let Some(p) = s.physical.as_mut() {
            p.level = Level::From(base);
        }
    }
    Ok(std::borrow::Cow::Owned(job))
}

/// Opens the job's source (connects, checks, starts reading); nothing has
/// reached the store yet.
async fn open_source(job: &Job, cancel: &CancellationToken) -> Result<source::Opened> {
    let src = source::kinds::build(&job.name, &job.source);
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::Interrupted),
        o = src.open() => o,
    }
}

/// What one extract's upload ended with: the store's answer and the
/// source's report, with the tallies of what passed.
struct Outcome {
    name: String,
    key: String,
    put: Result<u64>,
    report: Result<source::Report>,
    source: std::sync::Arc<pipeline::Tally>,
    stored: std::sync::Arc<pipeline::Tally>,
}

/// Sends extracts through the pipeline (compression, encryption) into the
/// store under the backup's folder.
struct Uploader {
    store: DynStore,
    dir: String,
    compression: pipeline::Compression,
    threads: usize,
    recipients: Option<crate::pipeline::encrypt::Recipients>,
    encryption: Option<crate::pipeline::encrypt::EncryptionInfo>,
    progress: crate::base::progress::DynProgress,
    cancel: CancellationToken,
}

impl Uploader {
    fn new(cat: &Catalog, job: &Job, dir: &str, cancel: CancellationToken) -> Result<Uploader> {
        let (recipients, encryption) = match &job.encryption {
            Some(spec) => {
                let (r, info) = crate::pipeline::encrypt::Recipients::from_spec(spec)?;
                (Some(r), Some(info))
            }
            None => (None, None),
        };
        Ok(Uploader {
            store: cat.store().clone(),
            dir: dir.to_owned(),
            compression: job.compression,
            threads: crate::base::parallelism(),
            recipients,
            encryption,
            progress: cat.progress().clone(),
            cancel,
        })
    }

    /// Stores one extract and collects its source's report.
    async fn one(&self, x: source::Extract) -> Outcome {
        let key = format!("{}/{}{}", self.dir, x.name, self.compression.suffix());
        let staged = pipeline::stage(
            progress::counted(x.stream, self.progress.clone()),
            self.compression,
            self.threads,
            self.recipients.clone(),
            self.cancel.clone(),
        );
        let put = self.store.put(&key, staged.stream).await;
        // Always collect the producer's report (it ends once the stream does).
        let report = x.finish.await;
        Outcome {
            name: x.name,
            key,
            put,
            report,
            source: staged.source,
            stored: staged.stored,
        }
    }

    /// The extracts a source opened with, stored side by side.
    async fn all(&self, extracts: Vec<source::Extract>) -> Vec<Outcome> {
        futures::future::join_all(extracts.into_iter().map(|x| self.one(x))).await
    }

    /// The parts of a stream, each stored as it comes; the first failure
    /// stops taking more (the source then stops).
    async fn parts(&self, mut parts: source::Parts) -> (Vec<Outcome>, Result<source::Report>) {
        let mut out = Vec::new();
        while let Some(x) = parts.next.recv().await {
            let o = self.one(x).await;
            let failed = o.put.is_err() || o.report.is_err();
            out.push(o);
            if failed {
                break;
            }
        }
        drop(parts.next);
        let finish = parts.finish.await;
        (out, finish)
    }
}

/// The artifacts of a run, or its first error and what it had written.
struct Stored {
    written: Vec<String>,
    artifacts: Vec<Artifact>,
    warnings: Vec<String>,
    /// Details of the sole extract, or the late ones of a parted stream.
    details: Option<serde_json::Value>,
    error: Option<Error>,
}

fn collect(
    results: Vec<Outcome>,
    late: Option<Result<source::Report>>,
    cancel: &CancellationToken,
) -> Stored {
    let mut s = Stored {
        written: Vec::new(),
        artifacts: Vec::new(),
        warnings: Vec::new(),
        details: None,
        error: None,
    };
    let n = results.len();
    for o in results {
        match (o.put, o.report) {
            (Ok(stored), Ok(report)) => {
                s.written.push(o.key.clone());
                debug_assert_eq!(stored, o.stored.bytes());
                s.warnings.extend(report.warnings);
                if n == 1 && late.is_none() {
                    s.details = Some(report.details.clone());
                }
                s.artifacts.push(Artifact {
                    name: o.name,
                    key: o.key,
                    source_bytes: o.source.bytes(),
                    stored_bytes: stored,
                    sha256: o.stored.sha256(),
                    details: report.details,
                });
            }
            (put, report) => {
                if put.is_ok() {
                    s.written.push(o.key.clone());
                }
                let err = failure(put, report);
                if s.error.is_none() || matches!(err, Error::Interrupted) {
                    s.error = Some(err);
                }
            }
        }
    }
    match late {
        Some(Ok(report)) => {
            s.warnings.extend(report.warnings);
            s.details = Some(report.details);
        }
        // A part's own failure (the store's error) names the cause better.
        Some(Err(e)) if s.error.is_none() => s.error = Some(e),
        _ => {}
    }
    if cancel.is_cancelled() && s.error.is_none() {
        s.error = Some(Error::Interrupted);
    }
    s
}

/// The error of a failed extract. A cancelled or failed stream surfaces
/// in both; prefer the interrupt, then the source's own error (it has the
/// cause)...
fn failure(put: Result<u64>, report: Result<source::Report>) -> Error {
    match (put, report) {
        (Err(Error::Interrupted), _) | (_, Err(Error::Interrupted)) => Error::Interrupted,
        // ...unless the source only saw the store stop reading: then the
        // store's error names the key and the cause (`No space left on
        // device`, an S3 refusal).
        (Err(store_e), Err(src_e)) if one_line(&src_e).contains(pipeline::CONSUMER_GONE) => store_e,
        (_, Err(e)) => e,
        (Err(e), _) => e,
        (Ok(_), Ok(_)) => unreachable!("a failure has an error"),
    }
}

/// Removes the artifacts of a failed run (prune removes what this misses).
async fn remove_written(store: &DynStore, written: Vec<String>) {
    for key in written {
        if let Err(de) = store.delete(&key).await {
            tracing::warn!(key = %key, error = %crate::error::one_line(&de), "could not remove the artifact of a failed backup; prune will");
        }
    }
}

/// Backup-level details with the sole extract's (or the parts' late)
/// details merged in.
fn merge_details(
    mut details: serde_json::Value,
    extra: Option<serde_json::Value>,
) -> serde_json::Value {
    if let (Some(serde_json::Value::Object(extra)), serde_json::Value::Object(base)) =
        (extra, &mut details)
    {
        for (k, v) in extra {
            // The per-file list stays in the artifact's details only.
            if k == source::files_list::KEY {
                continue;
            }
            base.insert(k, v);
        }
    }
    details
}

/// What a finished run records beside the job.
struct Recorded {
    id: String,
    started_at: chrono::DateTime<Utc>,
    artifacts: Vec<Artifact>,
    warnings: Vec<String>,
    details: serde_json::Value,
    encryption: Option<crate::pipeline::encrypt::EncryptionInfo>,
}

/// Writes the manifest, last: until it exists, the backup does not.
async fn record(cat: &Catalog, job: &Job, r: Recorded) -> Result<Manifest> {
    let store = cat.store();
    let previous = cat.chain_head(&job.name).await?;
    let first = r
        .artifacts
        .first()
        .ok_or_else(|| Error::source_err(format!("job {}", job.name), "produced no artifact"))?;
    let manifest = Manifest {
        format: catalog::FORMAT,
        id: r.id,
        job: job.name.clone(),
        kind: job.source.kind(),
        host: crate::base::host_name(),
        started_at: r.started_at,
        finished_at: Utc::now(),
        source_bytes: r.artifacts.iter().map(|a| a.source_bytes).sum(),
        stored_bytes: r.artifacts.iter().map(|a| a.stored_bytes).sum(),
        sha256: first.sha256.clone(),
        compression: job.compression,
        key: first.key.clone(),
        tool_version: catalog::TOOL_VERSION.into(),
        artifacts: r.artifacts,
        warnings: r.warnings,
        previous,
        storage: store.put_attributes(),
        encryption: r.encryption,
        details: r.details,
    };
    cat.write_manifest(&manifest).await?;
    Ok(manifest)
}

/// What a backup of `job` will read, for its progress line: about what the
/// previous backup read (one catalog listing, no look at the source); not
/// known for a first backup.
async fn estimate(cat: &Catalog, job: &Job) -> Total {
    if !cat.progress().enabled() {
        return Total::Unknown;
    }
    match cat.newest(&job.name).await {
        Ok(Some(e)) => Total::About(e.manifest.source_bytes),
        Ok(None) => Total::Unknown,
        Err(e) => {
            tracing::debug!(job = %job.name, error = %crate::error::one_line(&e), "no size estimate for the progress line");
            Total::Unknown
        }
    }
}
