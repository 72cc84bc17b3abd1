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

    let src = source::kinds::build(&job.name, &job.source);
    let opened = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Error::Interrupted),
        o = src.open() => o?,
    };

    let progress = cat.progress().clone();
    let task = progress::begin(
        &progress,
        &format!("backup {}", job.name),
        estimate(cat, job).await,
        Unit::Bytes,
    );
    let threads = crate::base::parallelism();
    let (recipients, encryption) = match &job.encryption {
        Some(spec) => {
            let (r, info) = crate::pipeline::encrypt::Recipients::from_spec(spec)?;
            (Some(r), Some(info))
        }
        None => (None, None),
    };
    let mut uploads = Vec::new();
    for x in opened.extracts {
        let key = format!("{dir}/{}{}", x.name, job.compression.suffix());
        let staged = pipeline::stage(
            progress::counted(x.stream, progress.clone()),
            job.compression,
            threads,
            recipients.clone(),
            cancel.clone(),
        );
        let store = store.clone();
        uploads.push(async move {
            let put = store.put(&key, staged.stream).await;
            // Always collect the producer's report (it ends once the stream does).
            let report = x.finish.await;
            (x.name, key, put, report, staged.source, staged.stored)
        });
    }
    let results = futures::future::join_all(uploads).await;

    let mut first_err: Option<Error> = None;
    let mut written = Vec::new();
    let mut artifacts = Vec::new();
    let mut warnings = Vec::new();
    let mut single_details = None;
    let n = results.len();
    for (name, key, put, report, src_tally, stored_tally) in results {
        match (put, report) {
            (Ok(stored), Ok(report)) => {
                written.push(key.clone());
                debug_assert_eq!(stored, stored_tally.bytes());
                warnings.extend(report.warnings);
                if n == 1 {
                    single_details = Some(report.details.clone());
                }
                artifacts.push(Artifact {
                    name,
                    key,
                    source_bytes: src_tally.bytes(),
                    stored_bytes: stored,
                    sha256: stored_tally.sha256(),
                    details: report.details,
                });
            }
            (put, report) => {
                if put.is_ok() {
                    written.push(key.clone());
                }
                // A cancelled or failed stream surfaces in both; prefer the
                // interrupt, then the source's own error (it has the cause).
                let err = match (put, report) {
                    (Err(Error::Interrupted), _) | (_, Err(Error::Interrupted)) => {
                        Error::Interrupted
                    }
                    // ...unless the source only saw the store stop reading:
                    // then the store's error names the key and the cause
                    // (`No space left on device`, an S3 refusal).
                    (Err(store_e), Err(src_e))
                        if one_line(&src_e).contains(pipeline::CONSUMER_GONE) =>
                    {
                        store_e
                    }
                    (_, Err(e)) => e,
                    (Err(e), _) => e,
                    _ => unreachable!(),
                };
                if first_err.is_none() || matches!(err, Error::Interrupted) {
                    first_err = Some(err);
                }
            }
        }
    }
    if cancel.is_cancelled() && first_err.is_none() {
        first_err = Some(Error::Interrupted);
    }
    if let Some(e) = first_err {
        for key in written {
            if let Err(de) = store.delete(&key).await {
                tracing::warn!(key = %key, error = %crate::error::one_line(&de), "could not remove the artifact of a failed backup; prune will");
            }
        }
        return Err(e);
    }

    let mut details = opened.details;
    if let (Some(serde_json::Value::Object(extra)), serde_json::Value::Object(base)) =
        (single_details, &mut details)
    {
        for (k, v) in extra {
            // The per-file list stays in the artifact's details only.
            if k == source::files_list::KEY {
                continue;
            }
            base.insert(k, v);
        }
    }
    let previous = cat.chain_head(&job.name).await?;
    let first = artifacts
        .first()
        .ok_or_else(|| Error::source_err(format!("job {}", job.name), "produced no artifact"))?;
    let manifest = Manifest {
        format: catalog::FORMAT,
        id: id.clone(),
        job: job.name.clone(),
        kind: job.source.kind(),
        host: crate::base::host_name(),
        started_at,
        finished_at: Utc::now(),
        source_bytes: artifacts.iter().map(|a| a.source_bytes).sum(),
        stored_bytes: artifacts.iter().map(|a| a.stored_bytes).sum(),
        sha256: first.sha256.clone(),
        compression: job.compression,
        key: first.key.clone(),
        tool_version: catalog::TOOL_VERSION.into(),
        artifacts,
        warnings,
        previous,
        storage: store.put_attributes(),
        encryption,
        details,
    };
    // The manifest goes last: until it exists, the backup does not.
    cat.write_manifest(&manifest).await?;
    task.done();
    tracing::info!(
        job = %job.name, id = %id,
        source_bytes = manifest.source_bytes, stored_bytes = manifest.stored_bytes,
        seconds = t0.elapsed().as_secs_f64(), "backup finished"
    );
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
