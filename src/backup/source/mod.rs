//! Sources: what a backup reads. A source opens one or more extracts (byte
//! streams, one per artifact); the backup pipes each through the pipeline to
//! the store, then awaits the extract's report (row counts, warnings, CRC).
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;

pub use crate::backup::catalog::Kind;
use crate::backup::catalog::{Catalog, Manifest, Verification};
pub use artifact::RestoreOptions;

use crate::base::ByteStream;
use crate::error::{Error, Result};
use crate::pipeline::Compression;

/// How a source spec is read from its job's `[[job]]` table. The policy
/// parser (`backup/policy.rs`) reads the keys common to every job and hands
/// the rest, split off by kind, to the kind's `Keys` (a strict serde struct:
/// its fields are the kind's keys); `from_policy` checks them and builds the
/// spec. Errors name the key through [`PolicyInput::err`].
pub trait FromPolicy: Sized {
    type Keys: serde::de::DeserializeOwned + std::fmt::Debug;
    /// The keys of the job's `drill = { … }` table this kind reads beside
    /// `schedule` and `timeout` (the policy refuses the others).
    const DRILL_KEYS: &'static [&'static str] = &[];
    /// The URL scheme of the scratch server a drill restores into, when
    /// the kind's drills need one (`target`, then required).
    const DRILL_TARGET_SCHEME: Option<&'static str> = None;
    fn from_policy(keys: Self::Keys, input: &PolicyInput<'_>) -> Result<Self>;
}

/// What a source spec gets from the policy parser beside its keys: the job,
/// its kind, the folder relative paths are taken from, and the way to make
/// an error located at the key (file, line, key), which the parser owns.
pub struct PolicyInput<'a> {
    pub job: &'a str,
    pub kind: Kind,
    /// The policy file's folder.
    pub base: &'a std::path::Path,
    err: &'a dyn Fn(&str, String) -> Error,
}

impl<'a> PolicyInput<'a> {
    pub fn new(
        job: &'a str,
        kind: Kind,
        base: &'a std::path::Path,
        err: &'a dyn Fn(&str, String) -> Error,
    ) -> Self {
        PolicyInput {
            job,
            kind,
            base,
            err,
        }
    }

    /// The config error at `key` of the job (`job "x": key `k`: msg`).
    pub fn err(&self, key: &str, msg: impl Into<String>) -> Error {
        (self.err)(key, msg.into())
    }

    /// A path of the policy, absolute and normalised.
    pub fn resolve(&self, p: &std::path::Path) -> std::path::PathBuf {
        crate::base::resolve_path(self.base, p)
    }

    /// `password-env` / `password-file` (at most one of them).
    pub fn secret(
        &self,
        env: &Option<String>,
        file: &Option<std::path::PathBuf>,
    ) -> Result<crate::base::Secret> {
        use crate::base::Secret;
        match (env, file) {
            (Some(_), Some(_)) => Err(self.err(
                "password-file",
                "set password-env or password-file, not both",
            )),
            (Some(v), None) => Ok(Secret::Env(v.clone())),
            (None, Some(f)) => Ok(Secret::File(self.resolve(f))),
            (None, None) => Ok(Secret::None),
        }
    }

    /// The required `url`, with one of `schemes` and without a password.
    pub fn url(&self, url: &Option<String>, schemes: &[&str]) -> Result<String> {
        let u = url
            .clone()
            .ok_or_else(|| self.err("url", format!("required for kind = \"{}\"", self.kind)))?;
        if !schemes.iter().any(|s| u.starts_with(&format!("{s}://"))) {
            return Err(self.err(
                "url",
                format!("must start with {}://", schemes.join(":// or ")),
            ));
        }
        let rest = u.split_once("://").map(|x| x.1).unwrap_or("");
        let authority = rest.split('/').next().unwrap_or("");
        if authority.contains(':')
            && authority.contains('@')
            && authority.split('@').next().unwrap_or("").contains(':')
        {
            // Never accept a password inside the URL: it would end up in logs and ps.
            return Err(self.err(
                "url",
                "must not contain a password; use password-env or password-file",
            ));
        }
        Ok(u)
    }
}

pub mod artifact;
pub mod files;
pub mod files_list;
pub mod files_restore;
pub mod kinds;
pub mod mysql;
pub mod pax;
pub mod redis;

/// What a source's spec tells about itself, beside being opened: each spec
/// type of the `sources!` list implements it.
pub trait SpecInfo {
    /// `policy check` lines saying what the job reads, each indented by two
    /// spaces and ending with a newline.
    fn describe(&self) -> String;
    /// The server the job reads from (a drill refuses it as its target
    /// unless allowed); None for a source that is not a server.
    fn server_url(&self) -> Option<&str> {
        None
    }
    /// The compression of a job that names none, and the level of one
    /// named without `compression-level`.
    fn default_compression(&self, named: Option<Compression>) -> Compression {
        named.unwrap_or(Compression::Gzip { level: 6 })
    }
    /// True when the job keeps a continuous archive beside its backups
    /// (mysql's binlog archive), which point-in-time drills need.
    fn has_archive(&self) -> bool {
        false
    }
    /// True when the job's restore tests start a scratch server of their
    /// own (mysql physical backups): a drill then takes no target server.
    fn drill_starts_own_server(&self) -> bool {
        false
    }
    /// The cron schedule of the job's incremental backups, if it takes any.
    fn incremental_schedule(&self) -> Option<&str> {
        None
    }
}

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
    /// A stream cut into parts as it is read (a physical backup).
    pub parts: Option<Parts>,
}

/// Extracts that a source makes while it reads, one after another (the
/// parts of one stream); each is stored before the next is taken.
pub struct Parts {
    /// The next part, until the source has ended.
    pub next: tokio::sync::mpsc::Receiver<Extract>,
    /// Resolves once every part has ended: backup-level details known
    /// only then (LSNs, the consistent point, the file list).
    pub finish: BoxFuture<'static, Result<Report>>,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// Connects, checks, and starts reading. Errors here happen before any
    /// byte reaches the store.
    async fn open(&self) -> Result<Opened>;
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
/// A new kind is one implementation of this and one line in `sources!`.
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
    /// What a backup needs besides its own objects (an incremental's
    /// parents), checked by `verify`; an error names what is missing.
    async fn check_dependencies(&self, _catalog: &Catalog, _m: &Manifest) -> Result<Vec<String>> {
        Ok(Vec::new())
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
