//! Restore: stream an artifact back, checking its SHA-256 as it is read,
//! and refuse to finish (nothing left in place) when it does not match.
//! Each kind restores its own way (`SourceKind::restore`).
use crate::backup::catalog::{Catalog, Entry};
pub use crate::backup::source::artifact::{Reading, RestoreOptions, TargetBinlog};
use crate::base::progress::{self, Total, Unit};
use crate::error::Result;

/// Restores a backup to `to` (a directory for config backups, a MySQL URL,
/// an RDB file or folder).
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
    let msg = m.kind.ops().restore(catalog, m, to, opts).await?;
    task.done();
    Ok(msg)
}
