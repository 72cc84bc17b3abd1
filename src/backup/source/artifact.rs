//! Reading an artifact back from the store: decrypted, decompressed, and
//! its stored bytes counted and hashed, so that a restore can refuse to
//! finish when they do not match the manifest. Shared by every source's
//! restore and by verify.
use std::sync::Arc;

use crate::backup::catalog::{Artifact, Catalog, Manifest};
use crate::base::ByteStream;
use crate::error::{Error, Result};
use crate::pipeline::{self, Compression, Tally};

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore over an existing target (non-empty directory, existing database, file).
    pub force: bool,
    /// MySQL: environment variable holding the target server's password.
    pub password_env: Option<String>,
    /// MySQL: `old=new` database renames.
    pub database_map: Vec<(String, String)>,
    /// MySQL: parallel connections (default: cores).
    pub threads: Option<usize>,
    /// Files: also restore symlinks that point outside the target (absolute
    /// ones, as config trees often have). Nothing is ever written through them.
    pub allow_external_links: bool,
    /// MySQL: whether the target's binary log records the restore (the
    /// base and, with `--until`, the replay alike).
    pub target_binlog: TargetBinlog,
}

/// One rule for a MySQL target's binary log in every restore: the whole
/// restore is written to it, or none of it (docs/pitr.md, "The target's
/// binary log").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetBinlog {
    /// Logged under the target's own GTIDs: its replicas get the restore.
    #[default]
    On,
    /// `SET SESSION sql_log_bin = 0` on every connection (BINLOG ADMIN or
    /// SUPER): the replicas of the target do not get it.
    Off,
}

impl TargetBinlog {
    pub fn word(self) -> &'static str {
        match self {
            TargetBinlog::On => "on",
            TargetBinlog::Off => "off",
        }
    }
}

/// The decompressed stream of one artifact, and the tally of the stored
/// bytes read; call `check` once the stream has been read to its end.
pub struct Reading {
    pub stream: ByteStream,
    pub(crate) stored: Arc<Tally>,
    pub(crate) artifact: Artifact,
}

impl Reading {
    pub async fn open(catalog: &Catalog, m: &Manifest, a: &Artifact) -> Result<Reading> {
        let compression: Compression = m.compression;
        let (mut stream, stored) = pipeline::tally(
            crate::base::progress::counted(
                catalog.store().get(&a.key).await?,
                catalog.progress().clone(),
            ),
            true,
        );
        if m.encryption.is_some() {
            let ids = catalog.identities().ok_or_else(|| {
                Error::CannotDecrypt(format!(
                    "backup {} is encrypted; pass --identity FILE (or --passphrase-env VAR)",
                    m.id
                ))
            })?;
            stream = crate::pipeline::encrypt::decrypt(stream, ids.clone());
        }
        Ok(Reading {
            stream: pipeline::decompress(stream, compression),
            stored,
            artifact: a.clone(),
        })
    }

    /// Compares what was read with the manifest.
    pub fn check(&self) -> Result<()> {
        let (n, sha) = (self.stored.bytes(), self.stored.sha256());
        if n != self.artifact.stored_bytes || sha != self.artifact.sha256 {
            return Err(Error::RestoreRefused(format!(
                "{}: read {n} bytes with sha256 {sha}, the manifest says {} bytes with sha256 {}; the stored object is damaged",
                self.artifact.key, self.artifact.stored_bytes, self.artifact.sha256
            )));
        }
        Ok(())
    }
}
