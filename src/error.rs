//! Typed errors with context. The exit-code table lives in `Error::exit_code`,
//! the one place the binary's edge consults.
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const CONFIG: i32 = 2;
    pub const LOCKED: i32 = 3;
    pub const VERIFY: i32 = 4;
    /// The backup, job or object named does not exist.
    pub const NOT_FOUND: i32 = 5;
    /// An encrypted backup cannot be read: no key given, or the wrong one.
    pub const DECRYPT: i32 = 6;
    /// `cexdr failover` refused: the primary still answers (nothing changed).
    pub const FAILOVER_REFUSED: i32 = 10;
    /// A failover step failed; the journal names it and `--resume` continues.
    pub const FAILOVER_STEP_FAILED: i32 = 11;
    pub const INTERRUPTED: i32 = 130;

    /// How bad an exit code is, for many outcomes in one run (`backup
    /// --all`): an interrupt, then a failure of any kind, then a lock (another
    /// run is doing the work), then success. A lock never hides a failure.
    pub fn severity(code: i32) -> u8 {
        match code {
            OK => 0,
            LOCKED => 1,
            VERIFY | NOT_FOUND | DECRYPT => 2,
            FAILED | CONFIG | FAILOVER_REFUSED | FAILOVER_STEP_FAILED => 3,
            INTERRUPTED => 5,
            _ => 4,
        }
    }

    /// The worse of two exit codes (the first on a tie).
    pub fn worst(a: i32, b: i32) -> i32 {
        if severity(b) > severity(a) {
            b
        } else {
            a
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy or runbook file is invalid; `line` and `key` point at the cause.
    #[error("{}{}: {msg}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        file: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        msg: String,
    },

    /// Wrong command-line usage that clap could not catch.
    #[error("{0}")]
    Usage(String),

    /// Anything that went wrong while running a named job.
    #[error("job {job}: {source}")]
    Job {
        job: String,
        #[source]
        source: Box<Error>,
    },

    /// A store operation failed; `key` is the object key (never a credential).
    #[error("store {store}: {op} {key}: {msg}")]
    Store {
        store: String,
        op: &'static str,
        key: String,
        msg: String,
    },

    /// The source (database, folder) could not be read. `msg` is the whole
    /// text (a cause's text included); `cause`, when there is one, is the
    /// underlying error (I/O, driver, RDB, task), kept as the source.
    #[error("source {what}: {msg}")]
    Source {
        what: String,
        msg: String,
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// S3 Object Lock keeps this object until `until`: not an error for prune.
    #[error("store {store}: {key} is locked until {until}")]
    ObjectLocked {
        store: String,
        key: String,
        until: String,
    },

    #[error("no backup with id {0} in the catalog")]
    NotFound(String),

    /// Another run holds the job's lock.
    #[error("job {job} is locked by {holder} since {since}")]
    Locked {
        job: String,
        holder: String,
        since: String,
    },

    /// Another failover of the runbook is running (exit 3).
    #[error("failover runbook {runbook} is locked by {holder} since {since}")]
    RunbookLocked {
        runbook: String,
        holder: String,
        since: String,
    },

    /// One or more backups failed verification (exit 4).
    #[error("{failed} of {total} backup(s) failed verification")]
    VerifyFailed { failed: usize, total: usize },

    /// Restoring refused, with no underlying error: the message says why
    /// (a target that exists, a backup without an artifact, a damaged object).
    #[error("restore: {0}")]
    RestoreRefused(String),

    /// An encrypted backup or segment was to be read without a key.
    #[error("restore: {0}")]
    CannotDecrypt(String),

    /// Restoring failed with an underlying cause, kept as the source
    /// (`what` names the artifact key, table or step; empty when the cause
    /// names it already, e.g. a typed error of a lower layer).
    #[error("restore{}{what}", if what.is_empty() { "" } else { ": " })]
    RestoreFailed {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A restore failed after creating databases, which were dropped again.
    /// The cause's text comes first (as the message always read); the cause
    /// itself stays the source.
    #[error("{} (the partially restored database(s) {} were dropped)", one_line(source.as_ref()), dropped.join(", "))]
    RestoreRolledBack {
        dropped: Vec<String>,
        #[source]
        source: Box<Error>,
    },

    #[error("interrupted")]
    Interrupted,

    /// A failover refused because the primary still answers (exit 10).
    #[error("step {step}: {msg}")]
    PrimaryAlive { step: String, msg: String },

    /// A failover step failed (exit 11); `step` names it. `permanent`:
    /// retrying cannot help (404, 401, a selector that matches nothing).
    /// `msg` is the whole text; `cause`, when there is one, is the
    /// underlying error (the step's `Failure`, a driver or API error).
    #[error("step {step}: {msg}")]
    StepFailed {
        step: String,
        msg: String,
        permanent: bool,
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A failover journal, lock or notification failed; `what` names it.
    #[error("{what}: {msg}")]
    Failover { what: String, msg: String },

    /// The job ran past its `timeout` and was stopped (nothing listed).
    #[error("timed out after {after}; stopped, nothing was kept")]
    Timeout { after: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn config(
        file: impl Into<PathBuf>,
        line: Option<usize>,
        key: Option<&str>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Config {
            file: file.into(),
            line,
            key: key.map(str::to_owned),
            msg: msg.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        // An interrupt travels through byte streams as an io::Error; unwrap it here.
        match Error::from_io(source) {
            Ok(e) => e,
            Err(source) => Error::Io {
                context: context.into(),
                source,
            },
        }
    }

    /// Recovers a typed error that was carried through an `io::Error`.
    pub fn from_io(e: io::Error) -> std::result::Result<Error, io::Error> {
        if e.get_ref().map(|r| r.is::<Error>()).unwrap_or(false) {
            let inner = e.into_inner().expect("checked above");
            Ok(*inner.downcast::<Error>().expect("checked above"))
        } else {
            Err(e)
        }
    }

    /// Wraps this error so that it can travel through a byte stream.
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            Error::Interrupted => io::ErrorKind::Interrupted,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }

    pub fn restore_failed(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::RestoreFailed {
            what: what.into(),
            source: source.into(),
        }
    }

    /// This error as a restore error: one already is stays as it is, any
    /// other becomes the cause of one (so that it reads `restore: …` and
    /// exits 1, as restores always did).
    pub fn in_restore(self) -> Self {
        match self {
            e @ (Error::RestoreRefused(_)
            | Error::CannotDecrypt(_)
            | Error::RestoreFailed { .. }
            | Error::RestoreRolledBack { .. }) => e,
            other => Error::restore_failed("", other),
        }
    }

    /// A source error with nothing underneath (the message says why).
    pub fn source_err(what: impl Into<String>, msg: impl std::fmt::Display) -> Self {
        Error::Source {
            what: what.into(),
            msg: msg.to_string(),
            cause: None,
        }
    }

    /// A source error whose message is its cause's text; the cause stays
    /// the source.
    pub fn source_from(
        what: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let cause = cause.into();
        Error::Source {
            what: what.into(),
            msg: cause.to_string(),
            cause: Some(cause),
        }
    }

    /// A source error that reads `context: cause`; the cause stays the source.
    pub fn source_with(
        what: impl Into<String>,
        context: &str,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let cause = cause.into();
        Error::Source {
            what: what.into(),
            msg: format!("{context}: {cause}"),
            cause: Some(cause),
        }
    }

    pub fn in_job(self, job: &str) -> Self {
        match self {
            e @ (Error::Job { .. } | Error::Interrupted | Error::Locked { .. }) => e,
            e => Error::Job {
                job: job.to_owned(),
                source: Box::new(e),
            },
        }
    }

    /// The innermost typed error (through `Job` wrappers).
    pub fn root(&self) -> &Error {
        match self {
            Error::Job { source, .. } => source.root(),
            e => e,
        }
    }

    /// True for a failover step error that retrying cannot fix.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.root(),
            Error::StepFailed {
                permanent: true,
                ..
            }
        )
    }

    pub fn exit_code(&self) -> i32 {
        match self.root() {
            Error::Config { .. } | Error::Usage(_) => exit::CONFIG,
            Error::Locked { .. } | Error::RunbookLocked { .. } => exit::LOCKED,
            Error::VerifyFailed { .. } => exit::VERIFY,
            Error::Interrupted => exit::INTERRUPTED,
            Error::PrimaryAlive { .. } => exit::FAILOVER_REFUSED,
            Error::StepFailed { .. } => exit::FAILOVER_STEP_FAILED,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::CannotDecrypt(_) => exit::DECRYPT,
            _ if self.is_decrypt_failure() => exit::DECRYPT,
            _ => exit::FAILED,
        }
    }

    /// True when a decryption failure (`DecryptError`:
    /// the wrong key or passphrase, a damaged age header) is among the causes.
    pub fn is_decrypt_failure(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            let inner = e
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .map(|i| i as &(dyn std::error::Error + 'static));
            if e.is::<DecryptError>() || inner.is_some_and(|i| i.is::<DecryptError>()) {
                return true;
            }
            cur = e.source();
        }
        false
    }

    /// The error as a JSON document for `--json` (stdout): what failed, the
    /// job, step or file it names, and the exit code.
    pub fn to_json(&self) -> serde_json::Value {
        let code = self.exit_code();
        let mut err = serde_json::json!({
            "message": one_line(self),
            "kind": self.kind_name(),
        });
        let mut e = self;
        loop {
            match e {
                Error::Job { job, source } => {
                    err["job"] = job.clone().into();
                    e = source;
                }
                Error::Config {
                    file, line, key, ..
                } => {
                    err["file"] = file.display().to_string().into();
                    if let Some(l) = line {
                        err["line"] = (*l).into();
                    }
                    if let Some(k) = key {
                        err["key"] = k.clone().into();
                    }
                    break;
                }
                Error::StepFailed { step, .. } | Error::PrimaryAlive { step, .. } => {
                    err["step"] = step.clone().into();
                    break;
                }
                _ => break,
            }
        }
        serde_json::json!({ "schema": "cexdr.error/1", "error": err, "exit": code })
    }

    /// A stable name for the kind of failure, by exit code.
    fn kind_name(&self) -> &'static str {
        match self.exit_code() {
            exit::CONFIG => "config",
            exit::LOCKED => "locked",
            exit::VERIFY => "verification-failed",
            exit::NOT_FOUND => "not-found",
            exit::DECRYPT => "cannot-decrypt",
            exit::FAILOVER_REFUSED => "failover-refused",
            exit::FAILOVER_STEP_FAILED => "step-failed",
            exit::INTERRUPTED => "interrupted",
            _ => "failed",
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        e.into_io()
    }
}

/// Decryption failed (wrong key or passphrase, a damaged age header). The
/// pipeline's decryption stage raises it inside the stream's `io::Error`,
/// where `Error::exit_code` finds it (exit 6).
#[derive(Debug)]
pub struct DecryptError(String);

impl std::fmt::Display for DecryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecryptError {}

impl DecryptError {
    pub fn new(msg: impl Into<String>) -> Self {
        DecryptError(msg.into())
    }
}

/// Full error text on one line: each cause joined with ": " (skipping repeats).
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many outcomes in one run: the worst wins, a lock never hides a failure.
    #[test]
    fn the_worst_exit_code_wins() {
        use exit::*;
        for (a, b, want) in [
            (OK, LOCKED, LOCKED),
            (LOCKED, FAILED, FAILED),
            (FAILED, LOCKED, FAILED),
            (LOCKED, VERIFY, VERIFY),
            (VERIFY, FAILED, FAILED),
            (FAILED, VERIFY, FAILED),
            (DECRYPT, LOCKED, DECRYPT),
            (FAILED, INTERRUPTED, INTERRUPTED),
            (INTERRUPTED, FAILED, INTERRUPTED),
            (OK, OK, OK),
        ] {
            assert_eq!(worst(a, b), want, "worst({a}, {b})");
        }
    }

    #[test]
    fn errors_as_json_name_what_they_name() {
        let e = Error::config("p.toml", Some(3), Some("paths"), "bad").in_job("cfg");
        let j = e.to_json();
        assert_eq!(j["schema"], "cexdr.error/1");
        assert_eq!(j["exit"], 2);
        assert_eq!(j["error"]["kind"], "config");
        assert_eq!(j["error"]["job"], "cfg");
        assert_eq!(j["error"]["file"], "p.toml");
        assert_eq!(j["error"]["line"], 3);
        assert_eq!(j["error"]["key"], "paths");
        let e = Error::CannotDecrypt("backup x is encrypted".into());
        assert_eq!(e.exit_code(), exit::DECRYPT);
        assert_eq!(e.to_json()["error"]["kind"], "cannot-decrypt");
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            DecryptError::new("age: no matching keys found"),
        );
        let e = Error::restore_failed("a.tar.gz", io);
        assert_eq!(e.exit_code(), exit::DECRYPT);
    }

    #[test]
    fn exit_codes_look_through_job_wrappers() {
        let e = Error::VerifyFailed {
            failed: 1,
            total: 2,
        }
        .in_job("db");
        assert_eq!(e.exit_code(), exit::VERIFY);
        assert_eq!(Error::Interrupted.in_job("db").exit_code(), 130);
        assert_eq!(
            Error::config("p.toml", Some(3), Some("x"), "bad").exit_code(),
            2
        );
        assert_eq!(Error::NotFound("x".into()).exit_code(), exit::NOT_FOUND);
        let refused = Error::PrimaryAlive {
            step: "p".into(),
            msg: "answers".into(),
        };
        assert_eq!(refused.exit_code(), exit::FAILOVER_REFUSED);
        let failed = Error::StepFailed {
            step: "dns".into(),
            msg: "x".into(),
            permanent: false,
            cause: None,
        };
        assert_eq!(failed.exit_code(), exit::FAILOVER_STEP_FAILED);
    }

    #[test]
    fn typed_errors_survive_an_io_error() {
        let io = Error::Interrupted.into_io();
        assert!(matches!(Error::io("reading", io), Error::Interrupted));
        let plain = io::Error::other("boom");
        assert!(matches!(Error::io("reading", plain), Error::Io { .. }));
    }

    #[test]
    fn restore_failures_keep_their_cause() {
        let io = io::Error::new(io::ErrorKind::InvalidData, "damaged sparse map");
        let e = Error::restore_failed("cfg/x/files.tar.gz", io);
        let src = std::error::Error::source(&e).expect("cause kept");
        assert_eq!(src.to_string(), "damaged sparse map");
        assert_eq!(
            one_line(&e),
            "restore: cfg/x/files.tar.gz: damaged sparse map"
        );
        assert_eq!(e.exit_code(), exit::FAILED);
    }

    #[test]
    fn source_errors_keep_their_cause_and_read_as_before() {
        let io = || io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::source_with("redis h:1", "cannot connect", io());
        assert_eq!(e.to_string(), "source redis h:1: cannot connect: refused");
        assert_eq!(one_line(&e), e.to_string());
        let cause = std::error::Error::source(&e).expect("cause kept");
        assert!(cause.downcast_ref::<io::Error>().is_some(), "typed cause");
        let e = Error::source_from("/x", io());
        assert_eq!(one_line(&e), "source /x: refused");
        assert!(std::error::Error::source(&Error::source_err("/x", "gone")).is_none());
    }

    #[test]
    fn other_errors_become_the_cause_of_a_restore_error() {
        let e = Error::io("reading x", io::Error::other("boom")).in_restore();
        assert!(matches!(e, Error::RestoreFailed { .. }));
        assert_eq!(one_line(&e), "restore: reading x: boom");
        let inner = std::error::Error::source(&e).expect("cause kept");
        assert!(inner.downcast_ref::<Error>().is_some(), "typed cause");
        let refused = Error::RestoreRefused("x exists".into());
        assert_eq!(one_line(&refused.in_restore()), "restore: x exists");
        let rolled = Error::RestoreRolledBack {
            dropped: vec!["a".into(), "b".into()],
            source: Box::new(Error::restore_failed(
                "loading data",
                io::Error::other("gone"),
            )),
        };
        assert_eq!(
            one_line(&rolled),
            "restore: loading data: gone (the partially restored database(s) a, b were dropped)"
        );
        assert_eq!(rolled.exit_code(), exit::FAILED);
    }
}
