//! What `promote-mysql` needs of the PITR binlog archive, as a trait: the
//! archive lives in `backup` (which failover never imports), so the CLI, the
//! one place that sees both, hands the engine an `Archives` opener built on
//! `backup::binlog::topup`. Positions and GTIDs cross this boundary as
//! MariaDB strings (`0-1-42,1-1-7`), times as UTC.
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The step's `archive = { policy = "/etc/cexdr/policy.toml", job = "ledger" }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArchiveRef {
    /// The backup policy that names the job's store.
    pub policy: PathBuf,
    /// The mysql job whose binlog archive holds the old primary's timeline.
    pub job: String,
    /// An age identity file, when the job encrypts its segments.
    pub identity_file: Option<PathBuf>,
}

/// Why an `archive = { … }` table is refused; the text names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveRefError {
    #[error("policy: give the backup policy file")]
    NoPolicy,
    #[error("job: {0:?} is not a job name")]
    Job(String),
    #[error("identity-file: empty path")]
    EmptyIdentityFile,
}

/// Why the archive could not be opened, read or applied, in the words the
/// step shows (`msg`); the backup flow's error behind it stays the source.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct ArchiveError {
    pub msg: String,
    #[source]
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ArchiveError {
    /// The cause's whole chain on one line as the message, the cause kept.
    pub fn of(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ArchiveError {
        let cause = cause.into();
        ArchiveError {
            msg: crate::error::one_line(cause.as_ref()),
            cause: Some(cause),
        }
    }
}

impl ArchiveRef {
    /// Shape only (no I/O): `runbook check` runs this.
    pub fn validate(&self) -> std::result::Result<(), ArchiveRefError> {
        if self.policy.as_os_str().is_empty() {
            return Err(ArchiveRefError::NoPolicy);
        }
        let j = self.job.trim();
        if j.is_empty() || j != self.job || j.contains('/') {
            return Err(ArchiveRefError::Job(self.job.clone()));
        }
        if matches!(&self.identity_file, Some(f) if f.as_os_str().is_empty()) {
            return Err(ArchiveRefError::EmptyIdentityFile);
        }
        Ok(())
    }

    pub fn label(&self) -> String {
        format!(
            "binlog archive of job {} (policy {})",
            self.job,
            self.policy.display()
        )
    }
}

/// The newest stretch of the archive: the old primary's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// The store folder of the timeline (`0001-s1`).
    pub timeline: String,
    /// The server the timeline was read from.
    pub server_id: u32,
    pub server_address: String,
    /// The newest archived position, and where the continuous stretch that
    /// ends there starts (a top-up needs the replica inside it).
    pub position: String,
    pub stretch_start: String,
    pub newest_commit: Option<DateTime<Utc>>,
    pub newest_seq: u64,
}

/// Where the archived transactions go: the replica, through the `mariadb`
/// client, with binlog on and the original GTIDs.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// A named lock (`GET_LOCK`) the client session holds while it applies:
    /// a resumed step waits on it, so that a client orphaned by a kill -9 of
    /// cexdr has finished before the position is read again.
    pub lock: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub transactions: u64,
    /// The first applied GTID of each domain, and the position reached.
    pub first_gtid: String,
    pub last_gtid: String,
    pub seconds: f64,
}

#[async_trait]
pub trait ArchiveTopUp: Send + Sync {
    /// The newest archived position of the newest timeline (loads the
    /// manifests); None: nothing archived.
    async fn head(&self) -> std::result::Result<Option<Head>, ArchiveError>;
    /// The commit time (seconds precision) of one archived GTID, if archived.
    async fn commit_time(
        &self,
        gtid: &str,
    ) -> std::result::Result<Option<DateTime<Utc>>, ArchiveError>;
    /// Applies every archived transaction after `from` up to the head (each
    /// domain), GTIDs preserved, nothing already in `from`.
    async fn apply(&self, from: &str, to: &Target) -> std::result::Result<Applied, ArchiveError>;
}

#[async_trait]
pub trait OpenArchive: Send + Sync {
    async fn open(
        &self,
        r: &ArchiveRef,
    ) -> std::result::Result<Arc<dyn ArchiveTopUp>, ArchiveError>;
}

/// The opener the engine carries to the steps (`RunInfo::archives`).
#[derive(Clone)]
pub struct Archives(pub Arc<dyn OpenArchive>);

impl std::fmt::Debug for Archives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Archives(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_refs_are_strict() {
        let r: ArchiveRef = toml::from_str("policy = \"/etc/p.toml\"\njob = \"ledger\"\n").unwrap();
        assert!(r.validate().is_ok());
        assert!(toml::from_str::<ArchiveRef>("policy = \"p\"\njob = \"j\"\nstore = 1\n").is_err());
        let bad = ArchiveRef {
            job: " x".into(),
            ..r.clone()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("job"));
        let bad = ArchiveRef {
            policy: PathBuf::new(),
            ..r
        };
        assert!(bad.validate().unwrap_err().to_string().contains("policy"));
    }
}
