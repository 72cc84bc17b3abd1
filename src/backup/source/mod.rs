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
use crate::pipeline::Compression;
use files::FilesSpec;
use mysql::MysqlSpec;
use redis::RedisSpec;

/// The one list of sources: each line is `Variant(SpecType) => "kind name",
/// SourceType, KindOps;`. It derives `SourceSpec` (one variant per line),
/// `Kind` (serialised as the kind name in manifests and `kind = "…"` in
/// policies), `Kind::ALL`, `Kind::name`, `Kind::ops`, the policy keys of
/// each kind (`Kind::policy_keys`, `Kind::read_keys`, [`PolicyKeys`]) and
/// [`build`], so that a new source is its file plus one line here.
/// `SourceType::new(job, spec)` opens backups (`Source`); `KindOps` (a unit
/// struct implementing `SourceKind`) validates, restores and restore-tests
/// them; `SpecType` implements [`FromPolicy`] (its keys of a `[[job]]`
/// table) and [`SpecInfo`].
macro_rules! sources {
    ($($variant:ident($spec:ty) => $name:literal, $source:ty, $ops:expr;)+) => {
        #[derive(Debug, Clone, PartialEq)]
        pub enum SourceSpec {
            $($variant($spec),)+
        }

        impl SourceSpec {
            pub fn kind(&self) -> Kind {
                match self {
                    $(SourceSpec::$variant(_) => Kind::$variant,)+
                }
            }

            /// What the spec tells about itself (`policy check`, drills).
            pub fn info(&self) -> &dyn SpecInfo {
                match self {
                    $(SourceSpec::$variant(spec) => spec,)+
                }
            }
        }

        /// What a backup holds; `Manifest.kind`, serialised as its name
        /// (`files`, `mysql`, `redis`; a manifest of another kind does not
        /// parse, by name).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Kind {
            $(#[serde(rename = $name)] $variant,)+
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),+];

            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)+
                }
            }

            /// The one place that chooses what restores and checks a kind's backups.
            pub fn ops(self) -> &'static dyn SourceKind {
                match self {
                    $(Kind::$variant => &$ops,)+
                }
            }
        }

        impl Kind {
            /// The keys of a `[[job]]` table this kind reads beside the
            /// common ones (kebab-case, in its `FromPolicy::Keys` order).
            pub fn policy_keys(self) -> &'static [&'static str] {
                match self {
                    $(Kind::$variant => crate::base::toml_loc::struct_keys::<<$spec as FromPolicy>::Keys>(),)+
                }
            }

            /// The drill keys this kind reads ([`FromPolicy::DRILL_KEYS`]).
            pub fn drill_keys(self) -> &'static [&'static str] {
                match self {
                    $(Kind::$variant => <$spec as FromPolicy>::DRILL_KEYS,)+
                }
            }

            /// [`FromPolicy::DRILL_TARGET_SCHEME`] of this kind.
            pub fn drill_target_scheme(self) -> Option<&'static str> {
                match self {
                    $(Kind::$variant => <$spec as FromPolicy>::DRILL_TARGET_SCHEME,)+
                }
            }

            /// Deserialises this kind's keys of a job table (strict: a key
            /// it does not read is an error).
            pub fn read_keys(self, keys: toml::Table) -> std::result::Result<PolicyKeys, toml::de::Error> {
                match self {
                    $(Kind::$variant => toml::Value::Table(keys).try_into().map(PolicyKeys::$variant),)+
                }
            }
        }

        /// A job's source keys as read by [`Kind::read_keys`], before
        /// they are checked ([`PolicyKeys::into_spec`]).
        #[derive(Debug)]
        pub enum PolicyKeys {
            $($variant(<$spec as FromPolicy>::Keys),)+
        }

        impl PolicyKeys {
            pub fn into_spec(self, input: &PolicyInput<'_>) -> Result<SourceSpec> {
                match self {
                    $(PolicyKeys::$variant(keys) => <$spec as FromPolicy>::from_policy(keys, input).map(SourceSpec::$variant),)+
                }
            }
        }

        /// The one place that chooses a source implementation.
        pub fn build(job: &str, spec: &SourceSpec) -> Box<dyn Source> {
            let job = job.to_owned();
            match spec {
                $(SourceSpec::$variant(spec) => Box::new(<$source>::new(job, spec.clone())),)+
            }
        }
    };
}

sources! {
    Files(FilesSpec) => "files", files::FilesSource, files_restore::FilesKind;
    Mysql(MysqlSpec) => "mysql", mysql::MysqlSource, mysql::MysqlKind;
    Redis(RedisSpec) => "redis", redis::RedisSource, redis::RedisKind;
}

impl Kind {
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == s)
    }

    /// The kind names as a sentence: `files, mysql or redis`.
    pub fn names_sentence() -> String {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// Every source key of any kind, each once, in the order of the
    /// `sources!` list and of each kind's keys.
    pub fn all_policy_keys() -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for k in Kind::ALL {
            for key in k.policy_keys() {
                if !out.contains(key) {
                    out.push(key);
                }
            }
        }
        out
    }
}

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
}

/// Reads a stream to its end, counting bytes.
pub async fn drain(mut stream: ByteStream) -> Result<u64> {
    let mut n = 0u64;
    while let Some(c) = stream.next().await {
        n += c.map_err(|e| Error::io("reading artifact", e))?.len() as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Manifests and policies name kinds by these exact strings.
    #[test]
    fn kinds_serialise_as_their_names() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["files", "mysql", "redis"]);
        for k in Kind::ALL {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), *k);
            assert_eq!(Kind::from_name(k.name()), Some(*k));
        }
        assert!(serde_json::from_str::<Kind>("\"postgres\"").is_err());
        assert_eq!(Kind::from_name("Files"), None);
    }
}
