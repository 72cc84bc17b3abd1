//! Restore: stream an artifact back, checking its SHA-256 as it is read,
//! and refuse to finish (nothing left in place) when it does not match.
use std::path::{Path, PathBuf};

use crate::backup::catalog::{Catalog, Entry, Manifest};
pub use crate::backup::source::artifact::{Reading, RestoreOptions};
use crate::backup::source::files;
use crate::base::progress::{self, Total, Unit};
use crate::error::{Error, Result};
use crate::pipeline;

/// Restores a backup to `to` (a directory for config backups).
pub async fn restore(
    catalog: &Catalog,
    entry: &Entry,
    to: &str,
    opts: &RestoreOptions,
) -> Result<String> {
    let m = &entry.manifest;
    // Counts the stored bytes read (Reading::open), which the manifest knows.
    let task = progress::begin(
        catalog.progress(),
        &format!("restore {}", m.id),
        Total::Exact(m.stored_bytes),
        Unit::Bytes,
    );
    let msg = match m.kind.as_str() {
        "files" => restore_files(catalog, m, Path::new(to), opts).await,
        "mysql" => crate::backup::source::mysql::restore(catalog, m, to, opts).await,
        "redis" => crate::backup::source::redis::restore(catalog, m, to, opts).await,
        other => Err(Error::Restore(format!(
            "restoring {other} backups is not supported by this build"
        ))),
    }?;
    task.done();
    Ok(msg)
}

fn staging_dir(target: &Path) -> Result<PathBuf> {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target.file_name().ok_or_else(|| {
        Error::Restore(format!(
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

async fn restore_files(
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
        return Err(Error::Restore(format!(
            "{} exists and is not empty; use --force to restore over it",
            target.display()
        )));
    }
    let a = m
        .artifacts
        .first()
        .ok_or_else(|| Error::Restore(format!("backup {} has no artifact", m.id)))?;
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
