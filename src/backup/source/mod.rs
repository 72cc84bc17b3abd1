//! Sources: what a backup reads. A source opens one or more extracts (byte
//! streams, one per artifact); the backup pipes each through the pipeline to
//! the store, then awaits the extract's report (row counts, warnings, CRC).
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;

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
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Files(_) => "files",
            SourceSpec::Mysql(_) => "mysql",
            SourceSpec::Redis(_) => "redis",
        }
    }
}

pub mod artifact;
pub mod files;
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

/// Checks the decompressed content of an artifact of `kind` (the tar
/// structure, the RDB checksum); returns what was checked, for the record.
pub async fn validate(kind: &str, stream: ByteStream) -> Result<(u64, Vec<String>)> {
    match kind {
        "files" => files::validate(stream).await,
        "redis" => redis::validate(stream).await,
        "mysql" => mysql::validate(stream).await,
        _ => drain(stream).await.map(|n| (n, vec![])),
    }
}

/// Reads a stream to its end, counting bytes.
pub async fn drain(mut stream: ByteStream) -> Result<u64> {
    let mut n = 0u64;
    while let Some(c) = stream.next().await {
        n += c.map_err(|e| Error::io("reading artifact", e))?.len() as u64;
    }
    Ok(n)
}
