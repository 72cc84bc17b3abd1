//! The command line: one arm per subcommand, each a call into the library.
mod failover;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::backup::catalog::{Catalog, Entry, Status};
use crate::backup::policy::{Keep, Policy, SourceSpec, StoreSpec};
use crate::backup::{lease, metrics, prune, restore, run, scheduler, verify};
use crate::error::{exit, one_line, Error, Result};
use crate::store;
use crate::store::LOCAL_TEMP_FILE;

pub mod completions;
pub mod progress;

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    an operation failed (source, store, restore)
  2    usage or configuration error (bad flags, invalid policy)
  3    another run holds the job's lock
  4    verification failed
  10   failover refused: the primary still answers (nothing changed)
  11   a failover step failed (the journal names it; --resume continues)
  130  interrupted (Ctrl-C / SIGTERM); nothing half-written is left";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up one or more jobs now.
    Backup {
        /// Jobs to run, by name.
        jobs: Vec<String>,
        /// Run every job of the policy.
        #[arg(long, conflicts_with = "jobs")]
        all: bool,
    },
    /// List and inspect backups.
    #[command(subcommand)]
    Catalog(CatalogCmd),
    /// Re-read stored backups: checksum, full decompression, sizes, structure.
    Verify(VerifyArgs),
    /// Restore a backup; with --until / --until-gtid, to a point in time
    /// (base backup + archived binlog, docs/pitr.md).
    Restore {
        /// Backup id (see `catalog list`); with --until, the base to start from.
        #[arg(required_unless_present = "job")]
        id: Option<String>,
        /// PITR: the job whose newest base at or before the target is used.
        #[arg(long, conflicts_with = "id")]
        job: Option<String>,
        /// PITR: restore exactly the transactions committed at or before this
        /// time (RFC 3339, or "YYYY-MM-DD HH:MM:SS" in UTC).
        #[arg(long)]
        until: Option<String>,
        /// PITR: ... up to and including this GTID position (e.g. 0-1-4711).
        #[arg(long)]
        until_gtid: Option<String>,
        /// PITR: print the plan (base, segments, GTID range, size); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// PITR: replayed transactions merged into one commit.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100000))]
        batch: u32,
        /// Target: a directory (files), mysql://user@host:port (mysql), a file
        /// or, for a cluster, a directory (redis).
        #[arg(long)]
        to: String,
        /// Restore over an existing, non-empty target.
        #[arg(long)]
        force: bool,
        /// MySQL: environment variable with the target server's password.
        #[arg(long)]
        password_env: Option<String>,
        /// MySQL: restore database OLD as NEW (repeatable), as OLD=NEW.
        #[arg(long = "database-map", value_parser = parse_map)]
        database_map: Vec<(String, String)>,
        /// MySQL: parallel connections (default: number of cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Files: restore symlinks that point outside the target (e.g.
        /// absolute ones) as links; nothing is ever written through them.
        #[arg(long)]
        allow_external_links: bool,
    },
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
    /// Run every job on its schedule (see [daemon] in the policy).
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

#[derive(Debug, Subcommand)]
pub enum BinlogCmd {
    /// Archive one job's binlog in the foreground until SIGTERM / Ctrl-C.
    Archive {
        job: String,
        /// How long a killed archiver blocks the next one on this job.
        #[arg(long, default_value = "30s", value_parser = crate::base::parse_duration)]
        lease_ttl: std::time::Duration,
    },
    /// Re-read every archived segment (SHA-256, size, whole events) and check
    /// the archive's continuity; exit 4 on a damaged segment or a gap.
    Verify { job: String },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FailoverArgs {
    #[command(subcommand)]
    pub cmd: Option<FailoverCmd>,
    /// The runbook (TOML).
    #[arg(long)]
    pub runbook: Option<PathBuf>,
    /// Do not ask for confirmation (automation).
    #[arg(long)]
    pub yes: bool,
    /// Only the read-only checks; print what each step would change.
    #[arg(long)]
    pub dry_run: bool,
    /// Go on although the primary answers, within the cool-down, or beside an
    /// unfinished run; journaled with who and when.
    #[arg(long)]
    pub force: bool,
    /// Continue a run (default: the latest unfinished one).
    #[arg(long, value_name = "RUN", num_args = 0..=1, default_missing_value = "")]
    pub resume: Option<String>,
    /// Journal and lock folder (default: the runbook's state-dir).
    #[arg(long, env = "CEXDR_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Promote a replica although it lacks more than the step's
    /// `max-data-loss` (journaled with who and when).
    #[arg(long)]
    pub accept_data_loss: bool,
}

#[derive(Debug, Subcommand)]
pub enum FailoverCmd {
    /// Each step of a run with its timing, and the measured RTO.
    Status {
        /// Run id (default: the latest run).
        run: Option<String>,
        #[arg(long)]
        runbook: PathBuf,
        #[arg(long, env = "CEXDR_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunbookCmd {
    /// Validate a runbook and print its plan.
    Check { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this job (default: every job of the policy).
    #[arg(long)]
    pub job: Option<String>,
    /// Print the plan; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Folders without a manifest (and multipart uploads) younger than
    /// this may belong to a running backup and are left alone.
    #[arg(long, default_value = "24h", value_parser = crate::backup::policy::parse_duration)]
    pub grace: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCmd {
    /// Complete backups, oldest first, with their latest verification.
    List {
        #[arg(long)]
        job: Option<String>,
        /// files, mysql or redis.
        #[arg(long)]
        kind: Option<String>,
        /// Only backups started at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
    /// One backup's manifest and verification history.
    Show { id: String },
    /// PITR: the recoverable windows of mysql jobs with a binlog archive,
    /// and every gap, named.
    Pitr {
        #[arg(long)]
        job: Option<String>,
    },
    /// Check every manifest's and verification record's signature, and each
    /// job's chain of manifests (a deleted backup leaves a gap). Exit 4 on
    /// any finding.
    VerifySignatures {
        #[arg(long)]
        job: Option<String>,
        /// Trust only these public keys (hex); default: the keys published
        /// in the store under keys/.
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
    },
    /// Create an Ed25519 signing key file (0600) for `signing-key-file`.
    Keygen {
        /// Where to write the key; never overwrites.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup ids.
    pub ids: Vec<String>,
    /// Every backup of this job.
    #[arg(long, conflicts_with = "ids")]
    pub job: Option<String>,
    /// Every backup in the catalog.
    #[arg(long, conflicts_with_all = ["ids", "job"])]
    pub all: bool,
    /// Also restore into a scratch target and compare with the manifest:
    /// a MySQL URL for mysql backups; for redis backups a scratch
    /// redis-server is started on a free loopback port (no value needed).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub restore_test: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy and describe it in plain words.
    Check {
        /// Defaults to --policy.
        file: Option<PathBuf>,
    },
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("CEXDR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    progress::init(progress::mode(
        cli.json,
        cli.quiet,
        cli.log_format,
        progress::on_terminals(),
    ));
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

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

async fn open_catalog(policy: &Policy, cli: &CliKeys) -> Result<Catalog> {
    open_catalog_as(policy, cli, false).await
}

/// With `sign`, the catalog signs what it writes (needs the private key).
async fn open_catalog_as(policy: &Policy, cli: &CliKeys, sign: bool) -> Result<Catalog> {
    let signer = match (&policy.signing_key_file, sign) {
        (Some(f), true) => Some(std::sync::Arc::new(crate::backup::signing::Signer::load(
            f,
        )?)),
        _ => None,
    };
    let ids = match (&cli.identity, &cli.passphrase_env) {
        (Some(f), _) => Some(crate::pipeline::encrypt::Identities::from_file(f)?),
        (None, Some(v)) => Some(crate::pipeline::encrypt::Identities::from_passphrase(
            &crate::backup::policy::Secret::Env(v.clone()),
        )?),
        (None, None) => None,
    };
    Ok(Catalog::new(store::build(&policy.store).await?)
        .with_identities(ids)
        .with_signer(signer)
        .with_progress(progress::current()))
}

/// The decryption inputs of the command line.
struct CliKeys {
    identity: Option<PathBuf>,
    passphrase_env: Option<String>,
}

impl CliKeys {
    fn none() -> Self {
        CliKeys {
            identity: None,
            passphrase_env: None,
        }
    }
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
        Command::Backup { .. } | Command::Verify(_) | Command::Prune(_)
    ) {
        return Err(Error::Usage(
            "--metrics-file applies to backup, verify, prune and binlog archive".into(),
        ));
    }
    let policy_file = cli.policy.clone();
    // The jobs this run is about (None: all of the policy).
    let only: Option<Vec<String>> = match &cli.command {
        Command::Backup { jobs, all: false } => Some(jobs.clone()),
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
            Ok(c) => match c.list(None).await {
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
        Command::Completions { shell } => completions::print(shell),
        Command::Manpage { out } => completions::manpages(&out),
        Command::Policy(PolicyCmd::Check { file }) => {
            let file = file.unwrap_or(cli.policy);
            let p = Policy::load(&file)?;
            if cli.json {
                print_json(&describe_json(&p));
            } else {
                print!("{}", describe(&p, Utc::now()));
            }
            if let StoreSpec::S3(spec) = &p.store {
                if spec.object_lock.is_some() {
                    // The one check that needs the bucket: retention cannot be
                    // set without Object Lock enabled on it.
                    let s3 = crate::store::s3::S3Store::connect(spec.clone()).await?;
                    match s3.object_lock_enabled().await {
                        Ok(true) => {}
                        Ok(false) => eprintln!(
                            "cexdr: warning: bucket {} has no Object Lock enabled; uploads with object-lock will fail",
                            spec.bucket
                        ),
                        Err(e) => eprintln!("cexdr: warning: could not check Object Lock on bucket {}: {}", spec.bucket, one_line(&e)),
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Runbook(RunbookCmd::Check { file }) => {
            let rb = crate::failover::runbook::Runbook::load(&file)?;
            print!("{}", rb.describe());
            Ok(exit::OK)
        }
        Command::Failover(args) => failover::command(args, cli.json, cancel).await,
        Command::Backup { jobs, all } => {
            let policy = Policy::load(&cli.policy)?;
            let selected: Vec<_> = if all {
                policy.jobs.iter().collect()
            } else if jobs.is_empty() {
                return Err(Error::Usage("name at least one job, or --all".into()));
            } else {
                jobs.iter().map(|j| policy.job(j)).collect::<Result<_>>()?
            };
            let catalog = open_catalog_as(&policy, &keys, true).await?;
            let notifier = crate::backup::notifier::Notifier::for_policy(&policy, metrics.clone());
            let mut failed: Option<Error> = None;
            let mut done = Vec::new();
            for job in selected {
                if cancel.is_cancelled() {
                    failed.get_or_insert(Error::Interrupted);
                    break;
                }
                let t0 = std::time::Instant::now();
                let res = run::run_into(&catalog, job, cancel.clone()).await;
                if let Some(mt) = &metrics {
                    match &res {
                        Ok(m) => mt.succeeded(m, t0.elapsed().as_secs_f64()),
                        Err(e) if matches!(e.root(), Error::Locked { .. }) => {}
                        Err(_) => mt.failed(&job.name, Utc::now(), t0.elapsed().as_secs_f64()),
                    }
                }
                match &res {
                    Ok(m) => notifier.backup_succeeded(m).await,
                    // Another run holds the job: not a failure of the backup.
                    Err(e) if matches!(e.root(), Error::Locked { .. } | Error::Interrupted) => {}
                    Err(e) => notifier.backup_failed(&job.name, &one_line(e)).await,
                }
                match res {
                    Ok(m) => {
                        if !cli.json {
                            println!(
                                "{}: backup {} done: {} read, {} stored, sha256 {}{}",
                                m.job,
                                m.id,
                                human_bytes(m.source_bytes),
                                human_bytes(m.stored_bytes),
                                m.sha256,
                                if m.warnings.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({} warnings)", m.warnings.len())
                                }
                            );
                        }
                        done.push(m);
                    }
                    Err(e) => {
                        eprintln!("cexdr: error: {}", one_line(&e));
                        let stop = matches!(e, Error::Interrupted);
                        // Keep the most severe: an interrupt wins.
                        if failed.is_none() || stop {
                            failed = Some(e);
                        }
                        if stop {
                            break;
                        }
                    }
                }
            }
            if cli.json {
                print_json(&done);
            }
            match failed {
                Some(e) => Ok(e.exit_code()),
                None => Ok(exit::OK),
            }
        }
        Command::Catalog(CatalogCmd::List { job, kind, since }) => {
            let since: Option<DateTime<Utc>> = match since {
                Some(s) => Some(
                    DateTime::parse_from_rfc3339(&s)
                        .map_err(|e| {
                            Error::Usage(format!(
                                "--since {s:?}: {e} (use RFC 3339, e.g. 2026-11-25T00:00:00Z)"
                            ))
                        })?
                        .with_timezone(&Utc),
                ),
                None => None,
            };
            let policy = Policy::load(&cli.policy)?;
            let catalog = open_catalog(&policy, &keys).await?;
            let (listed, damaged) = catalog.scan(job.as_deref()).await?;
            let entries: Vec<Entry> = listed
                .into_iter()
                .filter(|e| {
                    kind.as_deref()
                        .map(|k| e.manifest.kind == k)
                        .unwrap_or(true)
                })
                .filter(|e| since.map(|s| e.manifest.started_at >= s).unwrap_or(true))
                .collect();
            if cli.json {
                let rows = entries.iter().map(Entry::to_json);
                print_json(
                    &rows
                        .chain(damaged.iter().map(|d| d.to_json()))
                        .collect::<Vec<_>>(),
                );
            } else {
                print!("{}", list_table(&entries));
                for d in &damaged {
                    println!("DAMAGED {}: {}", d.folder, d.error);
                }
            }
            Ok(exit::OK)
        }
        Command::Catalog(CatalogCmd::Keygen { out }) => {
            let s = crate::backup::signing::Signer::generate(&out)?;
            println!(
                "wrote {} (key {}); public key {}",
                out.display(),
                s.key_id,
                s.public_hex()
            );
            Ok(exit::OK)
        }
        Command::Catalog(CatalogCmd::VerifySignatures { job, trusted_keys }) => {
            let policy = Policy::load(&cli.policy)?;
            let catalog = open_catalog(&policy, &keys).await?;
            let trusted = if trusted_keys.is_empty() {
                catalog.published_keys().await?
            } else {
                let mut m = std::collections::BTreeMap::new();
                for k in &trusted_keys {
                    let key = crate::backup::signing::parse_public(k).ok_or_else(|| {
                        Error::Usage(format!(
                            "--trusted-key {k:?} is not a hex Ed25519 public key"
                        ))
                    })?;
                    m.insert(crate::backup::signing::key_id(&key), key);
                }
                m
            };
            let rows = catalog.audit(job.as_deref(), &trusted).await?;
            let bad = rows.iter().filter(|r| !r.is_ok()).count();
            if cli.json {
                print_json(&rows);
            } else {
                let ids: Vec<_> = trusted.keys().cloned().collect();
                println!(
                    "trusted keys: {}",
                    if ids.is_empty() {
                        "none".into()
                    } else {
                        ids.join(", ")
                    }
                );
                for r in &rows {
                    let mut line = format!(
                        "{} {} {}: signature {}",
                        r.job,
                        r.id,
                        r.object,
                        r.signature.word()
                    );
                    for p in &r.problems {
                        line.push_str(&format!("; {p}"));
                    }
                    println!("{line}");
                }
                println!("{} object(s) checked, {bad} with findings", rows.len());
            }
            if bad > 0 {
                return Err(Error::VerifyFailed {
                    failed: bad,
                    total: rows.len(),
                });
            }
            Ok(exit::OK)
        }
        Command::Catalog(CatalogCmd::Pitr { job }) => {
            let policy = Policy::load(&cli.policy)?;
            let jobs: Vec<&crate::backup::policy::Job> = match &job {
                Some(j) => vec![policy.job(j)?],
                None => policy
                    .jobs
                    .iter()
                    .filter(|j| matches!(&j.source, SourceSpec::Mysql(m) if m.binlog.is_some()))
                    .collect(),
            };
            let catalog = open_catalog(&policy, &keys).await?;
            let mut reports = Vec::new();
            for j in jobs {
                reports.push(crate::backup::binlog::commands::report(&catalog, &j.name).await?);
            }
            if cli.json {
                print_json(&reports);
            } else if reports.is_empty() {
                println!("no mysql job of this policy has a binlog archive (binlog = {{ … }})");
            } else {
                for r in &reports {
                    print!("{}", crate::backup::binlog::window::render(r));
                }
            }
            Ok(exit::OK)
        }
        Command::Catalog(CatalogCmd::Show { id }) => {
            let policy = Policy::load(&cli.policy)?;
            let catalog = open_catalog(&policy, &keys).await?;
            let e = catalog.find(&id).await?;
            if cli.json {
                let mut v = e.to_json();
                v["verifications"] = serde_json::to_value(&e.verifications).expect("serialisable");
                print_json(&v);
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&e.manifest).expect("serialisable")
                );
                for v in &e.verifications {
                    println!(
                        "verification {} {} ({}) by {}{}",
                        v.at.to_rfc3339(),
                        if v.status == Status::Ok {
                            "ok"
                        } else {
                            "FAILED"
                        },
                        v.method,
                        v.tool_version,
                        v.error
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Verify(args) => {
            let policy = Policy::load(&cli.policy)?;
            let catalog = open_catalog_as(&policy, &keys, true).await?;
            let (entries, damaged): (Vec<Entry>, _) = if args.all {
                catalog.scan(None).await?
            } else if let Some(job) = &args.job {
                policy.job(job)?;
                catalog.scan(Some(job)).await?
            } else if !args.ids.is_empty() {
                let mut v = Vec::new();
                for id in &args.ids {
                    v.push(catalog.find(id).await?);
                }
                (v, Vec::new())
            } else {
                return Err(Error::Usage("name backup ids, --job JOB or --all".into()));
            };
            let notifier = crate::backup::notifier::Notifier::for_policy(&policy, metrics.clone());
            let mut failed = 0;
            let mut records = Vec::new();
            for e in &entries {
                if cancel.is_cancelled() {
                    return Err(Error::Interrupted);
                }
                let v = match &args.restore_test {
                    None => verify::verify(&catalog, e).await?,
                    Some(target) => {
                        verify::restore_test(
                            &catalog,
                            e,
                            Some(target.as_str()).filter(|t| !t.is_empty()),
                        )
                        .await?
                    }
                };
                if v.status == Status::Failed {
                    failed += 1;
                    notifier
                        .verification_failed(&e.manifest, v.error.as_deref().unwrap_or("failed"))
                        .await;
                }
                if !cli.json {
                    match &v.error {
                        None => println!("{} {}: ok", e.manifest.job, e.manifest.id),
                        Some(err) => {
                            println!("{} {}: FAILED: {err}", e.manifest.job, e.manifest.id)
                        }
                    }
                }
                records.push(v);
            }
            if cli.json {
                print_json(&records);
            }
            // A folder that cannot be read is a failed verification, named.
            for d in &damaged {
                if cli.json {
                    eprintln!("cexdr: damaged backup folder {}: {}", d.folder, d.error);
                } else {
                    println!("{}: DAMAGED: {}", d.folder, d.error);
                }
            }
            if failed + damaged.len() > 0 {
                return Err(Error::VerifyFailed {
                    failed: failed + damaged.len(),
                    total: entries.len() + damaged.len(),
                });
            }
            if entries.is_empty() && !cli.json {
                println!("no backups to verify");
            }
            Ok(exit::OK)
        }
        Command::Prune(args) => prune_command(&cli.policy, cli.json, args, cancel).await,
        Command::Daemon => {
            let _ = metrics;
            scheduler::daemon(cli.policy, cancel, Vec::new()).await?;
            Ok(exit::OK)
        }
        Command::Binlog(BinlogCmd::Verify { job }) => {
            let policy = Policy::load(&cli.policy)?;
            let job = policy.job(&job)?;
            let catalog = open_catalog(&policy, &keys).await?;
            let (checks, report) = crate::backup::binlog::commands::verify(
                &catalog,
                &job.name,
                policy.signing_key_file.is_some(),
            )
            .await?;
            let breaks: Vec<_> = report
                .gaps
                .iter()
                .filter(|g| crate::backup::binlog::commands::is_break(&g.kind))
                .collect();
            let bad = checks.iter().filter(|c| !c.ok).count();
            if cli.json {
                print_json(&serde_json::json!({"segments": checks, "report": report}));
            } else {
                for c in checks.iter().filter(|c| !c.ok) {
                    println!(
                        "segment {} ({}): FAILED: {}",
                        c.seq,
                        c.key,
                        c.error.as_deref().unwrap_or("")
                    );
                }
                print!("{}", crate::backup::binlog::window::render(&report));
                println!(
                    "{} segment(s) checked, {bad} damaged, {} break(s) in the archive",
                    checks.len(),
                    breaks.len()
                );
            }
            if bad > 0 || !breaks.is_empty() {
                return Err(Error::VerifyFailed {
                    failed: bad + breaks.len(),
                    total: checks.len(),
                });
            }
            Ok(exit::OK)
        }
        Command::Binlog(BinlogCmd::Archive { job, lease_ttl }) => {
            let policy = Policy::load(&cli.policy)?;
            let job = policy.job(&job)?;
            let catalog = open_catalog_as(&policy, &keys, true).await?;
            let stats = std::sync::Arc::new(crate::backup::binlog::archive::Stats::default());
            crate::backup::binlog::commands::archive(
                &catalog,
                job,
                lease_ttl,
                stats,
                cli.metrics_file.clone(),
                cancel,
            )
            .await?;
            Ok(exit::OK)
        }
        Command::Restore {
            id,
            job,
            until,
            until_gtid,
            dry_run,
            batch,
            to,
            force,
            password_env,
            database_map,
            threads,
            allow_external_links,
        } => {
            let policy = Policy::load(&cli.policy)?;
            let catalog = open_catalog(&policy, &keys).await?;
            let opts = restore::RestoreOptions {
                force,
                password_env,
                database_map,
                threads,
                allow_external_links,
            };
            if until.is_some() || until_gtid.is_some() || job.is_some() {
                let target = crate::backup::binlog::commands::parse_until(
                    until.as_deref(),
                    until_gtid.as_deref(),
                )?;
                let job = match (&job, &id) {
                    (Some(j), _) => policy.job(j)?.name.clone(),
                    (None, Some(i)) => catalog.find(i).await?.manifest.job,
                    (None, None) => {
                        return Err(Error::Usage("give --job J or a base backup id".into()))
                    }
                };
                let req = crate::backup::binlog::commands::Request {
                    job: &job,
                    base_id: id.as_deref(),
                    until: &target,
                    to: &to,
                    batch: batch as usize,
                    dry_run,
                };
                let (plan, done) =
                    crate::backup::binlog::commands::restore_until(&catalog, &req, &opts).await?;
                match done {
                    None if cli.json => print_json(&plan),
                    None => print!("{}", plan.render()),
                    Some((msg, r)) if cli.json => {
                        print_json(&serde_json::json!({"plan": plan, "restore": msg, "replay": r}))
                    }
                    Some((msg, r)) => {
                        print!("{}", plan.render());
                        println!("{msg}");
                        println!(
                            "replayed {} transaction(s), {} row(s), up to GTID {} in {:.1} s ({:.0} rows/s, {:.0} transactions/s)",
                            r.transactions, r.rows, r.last_gtid, r.seconds,
                            r.rows as f64 / r.seconds.max(1e-3), r.transactions as f64 / r.seconds.max(1e-3)
                        );
                    }
                }
                return Ok(exit::OK);
            }
            if dry_run {
                return Err(Error::Usage(
                    "--dry-run applies to point-in-time restores (--until / --until-gtid)".into(),
                ));
            }
            let id = id.expect("clap requires an id without --job");
            let e = catalog.find(&id).await?;
            let msg = restore::restore(&catalog, &e, &to, &opts).await?;
            println!("{msg}");
            Ok(exit::OK)
        }
    }
}

async fn prune_command(
    policy_file: &std::path::Path,
    json: bool,
    args: PruneArgs,
    cancel: CancellationToken,
) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let jobs: Vec<&crate::backup::policy::Job> = match &args.job {
        Some(j) => vec![policy.job(j)?],
        None => policy.jobs.iter().collect(),
    };
    let catalog = open_catalog_as(&policy, &CliKeys::none(), !args.dry_run).await?;
    let notifier = crate::backup::notifier::Notifier::for_policy(&policy, None);
    let opts = prune::Options {
        dry_run: args.dry_run,
        grace: args.grace,
        now: Utc::now(),
    };
    let mut reports = Vec::new();
    let mut code = exit::OK;
    for job in jobs {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        // A dry run changes nothing, so it needs no lease (it can preview
        // while a backup runs); a real prune holds the job's lease.
        let res = if args.dry_run {
            prune::prune_job(&catalog, job, &opts).await
        } else {
            let c = &catalog;
            let o = &opts;
            lease::with_lease(
                catalog.store().clone(),
                &job.name,
                lease::DEFAULT_TTL,
                cancel.clone(),
                |_| async move { prune::prune_job(c, job, o).await },
            )
            .await
        };
        match res {
            Ok(r) => {
                if !r.errors.is_empty() {
                    code = code.max(exit::FAILED);
                    notifier.prune_failed(&job.name, &r.errors.join("; ")).await;
                }
                if !json {
                    print!("{}", prune::render_job(&r, args.dry_run));
                }
                reports.push(r);
            }
            Err(e) if matches!(e.root(), Error::Locked { .. }) => {
                eprintln!("cexdr: {}; not pruned", one_line(&e));
                code = exit::LOCKED;
            }
            Err(e) => return Err(e.in_job(&job.name)),
        }
    }
    let prefix = args
        .job
        .as_ref()
        .map(|j| format!("{j}/"))
        .unwrap_or_default();
    let uploads = prune::stale_uploads(&catalog, &prefix, &opts).await?;
    if !uploads.errors.is_empty() {
        code = code.max(exit::FAILED);
    }
    if json {
        print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "jobs": reports,
            "stale_uploads": uploads,
        }));
    } else {
        for u in uploads
            .aborted
            .iter()
            .filter(|u| u.upload_id == LOCAL_TEMP_FILE)
        {
            println!(
                "leftover temporary file {} (last written {}): {}",
                u.key,
                u.initiated
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "?".into()),
                if args.dry_run {
                    "would be removed"
                } else {
                    "removed"
                }
            );
        }
        for u in uploads
            .aborted
            .iter()
            .filter(|u| u.upload_id != LOCAL_TEMP_FILE)
        {
            println!(
                "stale upload {} (started {}): {}",
                u.key,
                u.initiated
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "?".into()),
                if args.dry_run {
                    "would be aborted"
                } else {
                    "aborted"
                }
            );
        }
        for e in &uploads.errors {
            println!("error: {e}");
        }
    }
    Ok(code)
}

fn parse_map(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(format!("{s:?} is not OLD=NEW")),
    }
}

fn list_table(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:<32} {:<14} {:<6} {:<20} {:>10} {:>10}  {}\n",
        "ID", "JOB", "KIND", "STARTED", "SOURCE", "STORED", "VERIFIED"
    );
    for e in entries {
        let m = &e.manifest;
        let ver = match e.latest_verification() {
            None => "never".to_owned(),
            Some(v) => format!(
                "{} {}",
                if v.status == Status::Ok {
                    "ok"
                } else {
                    "FAILED"
                },
                v.at.format("%Y-%m-%d %H:%M")
            ),
        };
        out.push_str(&format!(
            "{:<32} {:<14} {:<6} {:<20} {:>10} {:>10}  {}\n",
            m.id,
            m.job,
            m.kind,
            m.started_at.format("%Y-%m-%d %H:%M:%S"),
            human_bytes(m.source_bytes),
            human_bytes(m.stored_bytes),
            ver
        ));
    }
    out.push_str(&format!("{} backup(s)\n", entries.len()));
    out
}

fn keep_words(k: &Keep) -> String {
    if k.is_empty() {
        return "keep everything (no retention rules)".into();
    }
    let mut parts = Vec::new();
    if let Some(n) = k.last {
        parts.push(format!("the last {n}"));
    }
    for (n, unit) in [
        (k.hourly, "hourly"),
        (k.daily, "daily"),
        (k.weekly, "weekly"),
        (k.monthly, "monthly"),
        (k.yearly, "yearly"),
    ] {
        if let Some(n) = n {
            parts.push(format!("{n} {unit}"));
        }
    }
    if let Some(w) = &k.within {
        parts.push(format!("everything within {w}"));
    }
    format!("keep {}", parts.join(", "))
}

/// `policy check` in plain words.
pub fn describe(p: &Policy, now: DateTime<Utc>) -> String {
    let mut out = format!("policy {} is valid\n", p.file.display());
    match &p.store {
        StoreSpec::Local { path } => {
            out.push_str(&format!("store: local directory {}\n", path.display()))
        }
        StoreSpec::S3(s) => {
            out.push_str(&format!(
                "store: s3://{}/{} (region {}{}{}{})\n",
                s.bucket,
                s.prefix,
                s.region,
                s.endpoint
                    .as_ref()
                    .map(|e| format!(", endpoint {e}"))
                    .unwrap_or_default(),
                s.sse
                    .as_ref()
                    .map(|e| format!(", SSE {e}"))
                    .unwrap_or_default(),
                s.storage_class
                    .as_ref()
                    .map(|e| format!(", class {e}"))
                    .unwrap_or_default(),
            ));
        }
    }
    for j in &p.jobs {
        out.push_str(&format!("job {} ({}):\n", j.name, j.source.kind()));
        match &j.source {
            SourceSpec::Files(f) => {
                let paths: Vec<_> = f.paths.iter().map(|p| p.display().to_string()).collect();
                out.push_str(&format!("  folders: {}\n", paths.join(", ")));
                if !f.exclude.is_empty() {
                    out.push_str(&format!("  exclude: {}\n", f.exclude.join(", ")));
                }
            }
            SourceSpec::Mysql(m) => {
                out.push_str(&format!(
                    "  server: {} ({} threads, {:?} consistency)\n  databases: {}\n",
                    m.url,
                    m.threads,
                    m.consistency,
                    if m.databases.is_empty() {
                        "all but the system ones".into()
                    } else {
                        m.databases.join(", ")
                    }
                ));
            }
            SourceSpec::Redis(r) => {
                out.push_str(&format!(
                    "  server: {} (cluster: {})\n",
                    r.url,
                    match r.cluster {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "detect",
                    }
                ));
            }
        }
        out.push_str(&format!("  compression: {}\n", j.compression.name()));
        match &j.schedule {
            Some(s) => {
                // In the daemon's time zone, as the daemon will run them.
                let next: Vec<_> = s
                    .after_in(p.daemon.timezone, now)
                    .take(3)
                    .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                    .collect();
                let zone = if p.daemon.timezone == chrono_tz::UTC {
                    String::new()
                } else {
                    format!(" in {}", p.daemon.timezone)
                };
                out.push_str(&format!(
                    "  schedule: {}{zone} (next: {})\n",
                    s.expr,
                    next.join(", ")
                ));
            }
            None => out.push_str("  schedule: none (runs only when asked)\n"),
        }
        out.push_str(&format!("  retention: {}\n", keep_words(&j.keep)));
    }
    out
}

fn describe_json(p: &Policy) -> serde_json::Value {
    let now = Utc::now();
    serde_json::json!({
        "file": p.file,
        "jobs": p.jobs.iter().map(|j| serde_json::json!({
            "name": j.name,
            "kind": j.source.kind(),
            "compression": j.compression.name(),
            "schedule": j.schedule.as_ref().map(|s| s.expr.clone()),
            "next_runs": j.schedule.as_ref().map(|s| s.after_in(p.daemon.timezone, now).take(3).collect::<Vec<_>>()),
            "keep": j.keep,
        })).collect::<Vec<_>>(),
    })
}
