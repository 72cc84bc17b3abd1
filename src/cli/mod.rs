//! The command line: one arm per subcommand, each a call into the library.
//!
//! One file per command: its clap types and its rendering. What a command
//! does lives in the library (`backup::job` runs jobs and drills for
//! `backup`, `drill` and the daemon alike).
use std::path::PathBuf;

use chrono::Utc;
use clap::{CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::backup::metrics;
use crate::backup::policy::Policy;
use crate::error::{one_line, Error, Result};

pub mod backup;
pub mod binlog;
pub mod catalog;
pub mod completions;
pub mod daemon;
pub mod drill;
pub mod failover;
pub mod keys;
pub mod output;
pub mod policy;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod verify;

pub use backup::BackupArgs;
pub use binlog::BinlogCmd;
pub use catalog::CatalogCmd;
pub use drill::DrillArgs;
pub use failover::{FailoverArgs, FailoverCmd, RunbookCmd};
pub use policy::PolicyCmd;
pub use prune::PruneArgs;
pub use restore::RestoreArgs;
pub use verify::VerifyArgs;

use keys::{open_catalog, CliKeys};
use output::LogFormat;

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    an operation failed (source, store, restore)
  2    usage or configuration error (bad flags, invalid policy)
  3    another run holds the job's lock
  4    verification failed
  5    not found (no backup with that id)
  6    cannot decrypt: no key given for an encrypted backup, or the wrong one
  10   failover refused: the primary still answers (nothing changed)
  11   a failover step failed (the journal names it; --resume continues)
  130  interrupted (Ctrl-C / SIGTERM); nothing half-written is left
Several jobs in one run exit with the worst: 130, then any failure, then 3.
With --json, a failure also prints {\"schema\", \"error\": {…}, \"exit\"} on stdout.";

#[derive(Debug, Parser)]
#[command(name = "cexdr", version, about = "Backups and disaster recovery for MySQL, Redis and config folders", after_help = EXIT_CODES)]
pub struct Cli {
    /// Policy file (jobs, store, retention).
    #[arg(
        long,
        global = true,
        env = "CEXDR_POLICY",
        default_value = "/etc/cexdr/policy.toml"
    )]
    pub policy: PathBuf,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// age identity file for reading encrypted backups (restore, verify).
    #[arg(long, global = true, env = "CEXDR_IDENTITY_FILE")]
    pub identity: Option<PathBuf>,
    /// Environment variable holding the passphrase of passphrase-encrypted backups.
    #[arg(long, global = true)]
    pub passphrase_env: Option<String>,
    /// Log format on stderr: human, or json (one object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// backup, verify, prune: also write Prometheus metrics to this
    /// node_exporter textfile (atomically); binlog archive: rewrite it every 5 s.
    #[arg(long, global = true, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up one or more jobs now.
    Backup(BackupArgs),
    /// List and inspect backups; write the audit report.
    #[command(subcommand)]
    Catalog(CatalogCmd),
    /// Re-read stored backups: checksum, full decompression, sizes, structure.
    Verify(VerifyArgs),
    /// Restore a backup.
    Restore(RestoreArgs),
    /// Run a job's restore drill now (for systemd timers and CronJobs).
    Drill(DrillArgs),
    /// Validate policy files.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Fail over to the backup site with a runbook (docs/failover.md).
    Failover(FailoverArgs),
    /// Validate failover runbooks.
    #[command(subcommand)]
    Runbook(RunbookCmd),
    /// Apply retention: remove backups no `keep` rule keeps, incomplete
    /// backups and stale multipart uploads.
    Prune(PruneArgs),
    /// Run every job (and drill) on its schedule (see [daemon] in the policy).
    Daemon,
    /// Print a shell completion script (docs/operations.md says where it goes).
    Completions {
        #[arg(value_enum)]
        shell: completions::Shell,
    },
    /// Write man pages: cexdr.1 and one per subcommand (cexdr-backup.1, ...).
    Manpage {
        /// Folder to write them to (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// The continuous binlog archive of mysql jobs (PITR, docs/pitr.md).
    #[command(subcommand)]
    Binlog(BinlogCmd),
}

pub fn init_tracing(cli: &Cli) {
    let default = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "warn,cexdr=info",
            1 => "warn,cexdr=debug",
            _ => "info,cexdr=trace",
        }
    };
    progress::init(progress::mode(
        cli.json,
        cli.quiet,
        cli.log_format,
        progress::on_terminals(),
    ));
    let filter = tracing_subscriber::EnvFilter::try_from_env("CEXDR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match cli.log_format {
        LogFormat::Human => fmt.try_init(),
        LogFormat::Json => fmt.json().flatten_event(true).try_init(),
    };
}

/// Runs the command; returns the exit code for outcomes that are not errors.
pub async fn run(cli: Cli, cancel: CancellationToken) -> Result<i32> {
    let Some(file) = cli.metrics_file.clone() else {
        return run_command(cli, cancel, None).await;
    };
    // The archiver rewrites its own textfile while it runs.
    if matches!(cli.command, Command::Binlog(_)) {
        return run_command(cli, cancel, None).await;
    }
    if !matches!(
        cli.command,
        Command::Backup(_) | Command::Verify(_) | Command::Prune(_) | Command::Drill(_)
    ) {
        return Err(Error::Usage(
            "--metrics-file applies to backup, verify, drill, prune and binlog archive".into(),
        ));
    }
    let policy_file = cli.policy.clone();
    // The jobs this run is about (None: all of the policy).
    let only: Option<Vec<String>> = match &cli.command {
        Command::Backup(a) if !a.all => Some(a.jobs.clone()),
        Command::Drill(a) => Some(vec![a.job.clone()]),
        Command::Verify(a) if !a.all && a.job.is_none() => None,
        Command::Verify(a) => a.job.clone().map(|j| vec![j]),
        Command::Prune(a) => a.job.clone().map(|j| vec![j]),
        _ => None,
    };
    let metrics = metrics::Metrics::new();
    let res = run_command(cli, cancel, Some(metrics.clone())).await;
    // Written whatever the outcome: a failed run is what alerts need to see.
    if let Ok(policy) = Policy::load(&policy_file) {
        metrics.set_policy(&policy, Utc::now());
        match open_catalog(&policy, &CliKeys::none()).await {
            Ok(c) => match c.list_full(None).await {
                Ok(entries) => metrics.refresh_catalog(&entries),
                Err(_) => metrics.catalog_refresh_failed(),
            },
            Err(_) => metrics.catalog_refresh_failed(),
        }
        if let Some(jobs) = &only {
            metrics.retain_jobs(jobs);
        }
        if let Err(e) = metrics.write_file(&file) {
            eprintln!("cexdr: error: {}", one_line(&e));
        }
    }
    res
}

async fn run_command(
    cli: Cli,
    cancel: CancellationToken,
    metrics: Option<metrics::Metrics>,
) -> Result<i32> {
    let keys = CliKeys {
        identity: cli.identity.clone(),
        passphrase_env: cli.passphrase_env.clone(),
    };
    match cli.command {
        Command::Policy(cmd) => policy::check(cmd, cli.policy, cli.json).await,
        Command::Runbook(cmd) => failover::runbook(cmd),
        Command::Failover(args) => failover::failover(args, cli.json, cancel).await,
        Command::Backup(args) => {
            backup::backup(&cli.policy, cli.json, &keys, args, metrics, cancel).await
        }
        Command::Drill(args) => {
            drill::drill(&cli.policy, cli.json, &keys, args, metrics, cancel).await
        }
        Command::Catalog(cmd) => catalog::catalog(&cli.policy, cli.json, &keys, cmd).await,
        Command::Verify(args) => {
            verify::verify(&cli.policy, cli.json, &keys, args, metrics, cancel).await
        }
        Command::Prune(args) => prune::prune_command(&cli.policy, cli.json, args, cancel).await,
        Command::Daemon => daemon::daemon(cli.policy, cancel).await,
        Command::Restore(args) => restore::restore(&cli.policy, cli.json, &keys, args).await,
        Command::Completions { shell } => completions::print(Cli::command(), shell),
        Command::Manpage { out } => completions::manpages(Cli::command(), &out),
        Command::Binlog(cmd) => {
            binlog::binlog(
                &cli.policy,
                cli.json,
                &keys,
                cmd,
                cli.metrics_file.clone(),
                cancel,
            )
            .await
        }
    }
}
