//! Sources: what a backup reads. A source opens one or more extracts (byte
//! streams, one per artifact); the backup pipes each through the pipeline to
//! the store, then awaits the extract's report (row counts, warnings, CRC).
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::backup::catalog::{Catalog, Manifest, Verification};
pub use artifact::RestoreOptions;

use crate::base::ByteStream;
use crate::error::{Error, Result};
use files::FilesSpec;
use mysql::MysqlSpec;
use redis::RedisSpec;

#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Files(FilesSpec),
    Mysql(MysqlSpec),
    Redis(RedisSpec),
}

impl SourceSpec {
    pub fn kind(&self) -> Kind {
        match self {
            SourceSpec::Files(_) => Kind::Files,
            SourceSpec::Mysql(_) => Kind::Mysql,
            SourceSpec::Redis(_) => Kind::Redis,
        }
    }
}

/// What a backup holds; `Manifest.kind`, serialised as `files`, `mysql`,
/// `redis` (a manifest of another kind does not parse, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Files,
    Mysql,
    Redis,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Files, Kind::Mysql, Kind::Redis];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Files => "files",
            Kind::Mysql => "mysql",
            Kind::Redis => "redis",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The one place that chooses what restores and checks a kind's backups.
    pub fn ops(self) -> &'static dyn SourceKind {
        match self {
            Kind::Files => &files_restore::FilesKind,
            Kind::Mysql => &mysql::MysqlKind,
            Kind::Redis => &redis::RedisKind,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

pub mod artifact;
pub mod files;
pub mod files_list;
pub mod files_restore;
pub mod mysql;
pub mod pax;
pub mod redis;

/// What an extract says once its stream has ended.
#[derive(Debug, Default)]
pub struct Report {
    pub details: serde_json::Value,
    pub warnings: Vec<String>,
}

pub struct Extract {
    /// Artifact file name before the compression suffix: `config.tar`, `dump.sql`.
    pub name: String,
    pub stream: ByteStream,
    /// Resolves after the stream ended; an error here fails the backup.
    pub finish: BoxFuture<'static, Result<Report>>,
}

pub struct Opened {
    pub extracts: Vec<Extract>,
    /// Backup-level details (server version, snapshot coordinates, shards).
    pub details: serde_json::Value,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// Connects, checks, and starts reading. Errors here happen before any
    /// byte reaches the store.
    async fn open(&self) -> Result<Opened>;
}

/// The one place that chooses a source implementation.
pub fn build(job: &str, spec: &SourceSpec) -> Box<dyn Source> {
    let job = job.to_owned();
    match spec {
        SourceSpec::Files(spec) => Box::new(files::FilesSource::new(job, spec.clone())),
        SourceSpec::Mysql(spec) => Box::new(mysql::MysqlSource::new(job, spec.clone())),
        SourceSpec::Redis(spec) => Box::new(redis::RedisSource::new(job, spec.clone())),
    }
}

/// Where a restore test (`verify --restore-test`, a drill) restores to.
#[derive(Debug, Clone, Default)]
pub struct ScratchTarget {
    /// mysql: the scratch server's URL.
    pub url: Option<String>,
    /// mysql: its password.
    pub password: crate::base::Secret,
    /// files: a folder under which a unique scratch folder is made
    /// (default: the system's temporary folder).
    pub folder: Option<std::path::PathBuf>,
    /// The job's own source server (mysql URL), refused as a target
    /// unless `allow_source_server`.
    pub source_url: Option<String>,
    pub allow_source_server: bool,
    /// Give up after this long (scratch objects are still removed).
    pub timeout: Option<std::time::Duration>,
}

/// What every kind of backup can do once it is stored: check its content,
/// restore it, and restore it into scratch and compare (a restore test).
/// A new kind is one implementation of this and one arm in `Kind::ops`.
#[async_trait]
pub trait SourceKind: Send + Sync {
    /// Checks the decompressed content of one artifact (the tar structure,
    /// the RDB checksum, the dump's end marker); returns the byte count and
    /// what was checked, for the record.
    async fn validate(&self, stream: ByteStream) -> Result<(u64, Vec<String>)>;
    /// `cexdr restore ID --to TARGET`.
    async fn restore(
        &self,
        catalog: &Catalog,
        m: &Manifest,
        to: &str,
        opts: &RestoreOptions,
    ) -> Result<String>;
    /// Restores into scratch, compares with the manifest, removes the
    /// scratch objects. `Ok` carries the record (passed or not);
    /// `Error::Usage` means the target does not fit the kind.
    async fn restore_test(
        &self,
        catalog: &Catalog,
        m: &Manifest,
        target: &ScratchTarget,
    ) -> Result<Verification>;
}

/// Reads a stream to its end, counting bytes.
pub async fn drain(mut stream: ByteStream) -> Result<u64> {
    let mut n = 0u64;
    while let Some(c) = stream.next().await {
        n += c.map_err(|e| Error::io("reading artifact", e))?.len() as u64;
    }
    Ok(n)
}
