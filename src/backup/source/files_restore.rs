//! Files backups: restore (staged, moved into place only once every byte
//! matched the manifest) and the restore test against the per-file list
//! recorded at backup time (`files_list`).
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::Utc;

use super::artifact::{Reading, RestoreOptions};
use super::{files, files_list, ScratchTarget, SourceKind};
use crate::backup::catalog::{Catalog, Manifest, Status, Verification, TOOL_VERSION};
use crate::base::ByteStream;
use crate::error::{Error, Result};
use crate::pipeline;

pub struct FilesKind;

#[async_trait]
impl SourceKind for FilesKind {
    async fn validate(&self, stream: ByteStream) -> Result<(u64, Vec<String>)> {
        files::validate(stream).await
    }

    async fn restore(
        &self,
        catalog: &Catalog,
        m: &Manifest,
        to: &str,
        opts: &RestoreOptions,
    ) -> Result<String> {
        restore_files(catalog, m, Path::new(to), opts).await
    }

    async fn restore_test(
        &self,
        catalog: &Catalog,
        m: &Manifest,
        target: &ScratchTarget,
    ) -> Result<Verification> {
        if target.url.is_some() {
            return Err(Error::Usage(
                "files restore tests restore into a scratch folder (drill scratch = \"/dir\"); no URL applies".into(),
            ));
        }
        let t0 = std::time::Instant::now();
        let base = target.folder.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&base)
            .map_err(|e| Error::io(format!("creating the scratch folder {}", base.display()), e))?;
        let scratch = base.join(format!(
            "cexdr-drill-{}-{:08x}",
            m.job,
            rand::random::<u32>()
        ));
        // Removed whatever happens (also on a timeout: the guard drops).
        let _guard = Staging(Some(scratch.clone()));
        let opts = RestoreOptions {
            allow_external_links: true,
            ..Default::default()
        };
        let restored = restore_files(catalog, m, &scratch, &opts).await?;
        let seconds = t0.elapsed().as_secs_f64();
        let mut checks = vec![format!("{restored} (a scratch folder, removed again)")];
        let dir = scratch.clone();
        let m2 = m.clone();
        let (cmp_checks, problems) =
            tokio::task::spawn_blocking(move || files_list::compare(&m2, &dir))
                .await
                .map_err(|e| Error::restore_failed("comparing the restored tree", e))??;
        checks.extend(cmp_checks);
        let error = (!problems.is_empty()).then(|| {
            let n = problems.len();
            let mut shown: Vec<String> = problems.into_iter().take(20).collect();
            if n > 20 {
                shown.push(format!("and {} more", n - 20));
            }
            shown.join("; ")
        });
        Ok(Verification {
            backup_id: m.id.clone(),
            job: m.job.clone(),
            at: Utc::now(),
            status: if error.is_none() {
                Status::Ok
            } else {
                Status::Failed
            },
            method: "restore-test".into(),
            tool_version: TOOL_VERSION.into(),
            host: crate::base::host_name(),
            checks,
            error,
            details: serde_json::json!({"target": base.display().to_string(), "seconds": seconds}),
        })
    }
}

fn staging_dir(target: &Path) -> Result<PathBuf> {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target.file_name().ok_or_else(|| {
        Error::RestoreRefused(format!(
            "{} is not a usable target directory",
            target.display()
        ))
    })?;
    Ok(parent.join(format!(
        ".{}.cexdr-restore-{:08x}",
        name.to_string_lossy(),
        rand::random::<u32>()
    )))
}

/// Removes the staging directory unless disarmed.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

pub async fn restore_files(
    catalog: &Catalog,
    m: &Manifest,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<String> {
    let non_empty = match std::fs::read_dir(target) {
        Ok(mut rd) => rd.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io(format!("restore target {}", target.display()), e)),
    };
    if non_empty && !opts.force {
        return Err(Error::RestoreRefused(format!(
            "{} exists and is not empty; use --force to restore over it",
            target.display()
        )));
    }
    let a = m
        .artifacts
        .first()
        .ok_or_else(|| Error::RestoreRefused(format!("backup {} has no artifact", m.id)))?;
    let staging = staging_dir(target)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&staging)
        .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
    let mut guard = Staging(Some(staging.clone()));

    let reading = Reading::open(catalog, m, a).await?;
    let Reading {
        stream,
        stored,
        artifact,
    } = reading;
    let st = staging.clone();
    let external = opts.allow_external_links;
    let unpacked = tokio::task::spawn_blocking(move || {
        files::unpack_safe(pipeline::blocking_reader(stream), &st, external)
    })
    .await
    .map_err(|e| Error::restore_failed(format!("unpacking {}", a.key), e))?;
    let check = Reading {
        stream: pipeline::from_bytes(Vec::new()),
        stored,
        artifact,
    };
    // A damaged object explains an unpack error: say that first.
    if check.stored.bytes() >= check.artifact.stored_bytes {
        check.check()?;
    }
    let unpacked = unpacked.map_err(|e| Error::restore_failed(a.key.clone(), e))?;
    check.check()?;
    for s in unpacked.skipped.iter().chain(&unpacked.warnings) {
        tracing::warn!("{s}");
    }

    // Move into place only now that every byte matched the manifest.
    if !target.exists() {
        std::fs::rename(&staging, target)
            .map_err(|e| Error::io(format!("moving restored files to {}", target.display()), e))?;
        guard.0 = None;
    } else {
        let entries = std::fs::read_dir(&staging)
            .map_err(|e| Error::io(format!("reading {}", staging.display()), e))?;
        for e in entries {
            let e = e.map_err(|e| Error::io("reading staging directory", e))?;
            let dest = target.join(e.file_name());
            if let Ok(meta) = std::fs::symlink_metadata(&dest) {
                let res = if meta.is_dir() {
                    std::fs::remove_dir_all(&dest)
                } else {
                    std::fs::remove_file(&dest)
                };
                res.map_err(|err| Error::io(format!("replacing {}", dest.display()), err))?;
            }
            std::fs::rename(e.path(), &dest)
                .map_err(|err| Error::io(format!("moving {}", dest.display()), err))?;
        }
    }
    Ok(format!(
        "restored {} entries of backup {} into {}{}",
        unpacked.entries,
        m.id,
        target.display(),
        if unpacked.skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} special files skipped)", unpacked.skipped.len())
        }
    ))
}
