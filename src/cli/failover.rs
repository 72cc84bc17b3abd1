//! `cexdr failover` and `cexdr failover status`: parse, call the engine,
//! render. The terminal side of the engine's `Ui` lives here (the engine
//! prints nothing and reads nothing).
use std::io::{BufRead, IsTerminal, Write};

use tokio_util::sync::CancellationToken;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::output::print_json;
use crate::error::{exit, Error, Result};
use crate::failover::engine::{self, Ui};
use crate::failover::journal;

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

/// Progress on stdout; with `--json` on stderr (stdout carries only the
/// final document). Confirmation by typing the runbook's name on a TTY.
struct Terminal {
    json: bool,
}

impl Ui for Terminal {
    fn progress(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn confirm(&self, runbook: &str) -> Result<bool> {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage(
                "a failover needs confirmation: stdin is not a terminal, so pass --yes".into(),
            ));
        }
        print!("Type the runbook name ({runbook}) to fail over now: ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("reading the confirmation", e))?;
        Ok(line.trim() == runbook)
    }
}

pub async fn failover(args: FailoverArgs, json: bool, cancel: CancellationToken) -> Result<i32> {
    if let Some(FailoverCmd::Status {
        run,
        runbook,
        state_dir,
    }) = args.cmd
    {
        let rb = engine::load(&runbook, state_dir.as_deref())?;
        let dir = journal::runbook_dir(&rb.state_dir, &rb.name);
        let r = engine::status(&dir, run.as_deref())?;
        if json {
            print_json(&engine::status_json(&r));
        } else {
            print!("{}", engine::status_text(&r));
        }
        return Ok(exit::OK);
    }
    let Some(file) = args.runbook else {
        return Err(Error::Usage("failover needs --runbook FILE".into()));
    };
    let rb = engine::load(&file, args.state_dir.as_deref())?;
    let opts = engine::Options {
        yes: args.yes,
        dry_run: args.dry_run,
        force: args.force,
        resume: args.resume.map(|r| Some(r).filter(|r| !r.is_empty())),
        state_dir: args.state_dir,
        accept_data_loss: args.accept_data_loss,
        archives: Some(crate::failover::archive::Archives(std::sync::Arc::new(
            Archives,
        ))),
    };
    let doc = engine::failover(&rb, &opts, &Terminal { json }, cancel).await?;
    if json {
        print_json(&doc);
    }
    Ok(exit::OK)
}

pub fn runbook(cmd: RunbookCmd) -> Result<i32> {
    let RunbookCmd::Check { file } = cmd;
    let rb = crate::failover::runbook::Runbook::load(&file)?;
    print!("{}", rb.describe());
    Ok(exit::OK)
}

/// `failover::archive` on `backup::binlog::topup`: the failover flow reaches
/// the binlog archive only through this adapter (type mapping, no logic).
struct Archives;

struct TopUp(crate::backup::binlog::topup::TopUp);

use crate::failover::archive::ArchiveError;

#[async_trait::async_trait]
impl crate::failover::archive::OpenArchive for Archives {
    async fn open(
        &self,
        r: &crate::failover::archive::ArchiveRef,
    ) -> std::result::Result<std::sync::Arc<dyn crate::failover::archive::ArchiveTopUp>, ArchiveError>
    {
        crate::backup::pitr::open_topup(&r.policy, &r.job, r.identity_file.as_deref())
            .await
            .map(|t| std::sync::Arc::new(TopUp(t)) as _)
            .map_err(ArchiveError::of)
    }
}

#[async_trait::async_trait]
impl crate::failover::archive::ArchiveTopUp for TopUp {
    async fn head(
        &self,
    ) -> std::result::Result<Option<crate::failover::archive::Head>, ArchiveError> {
        let h = self.0.head().await.map_err(ArchiveError::of)?;
        Ok(h.map(|h| crate::failover::archive::Head {
            timeline: h.timeline,
            server_id: h.server_id,
            server_address: h.server_address,
            position: h.position.to_string(),
            stretch_start: h.stretch_start.to_string(),
            newest_commit: h.newest_commit,
            newest_seq: h.newest_seq,
        }))
    }

    async fn commit_time(
        &self,
        gtid: &str,
    ) -> std::result::Result<Option<chrono::DateTime<chrono::Utc>>, ArchiveError> {
        let g = gtid
            .parse()
            .map_err(|e: crate::backup::catalog::gtid::GtidError| ArchiveError::of(e))?;
        self.0.commit_time(&g).await.map_err(ArchiveError::of)
    }

    async fn apply(
        &self,
        from: &str,
        to: &crate::failover::archive::Target,
    ) -> std::result::Result<crate::failover::archive::Applied, ArchiveError> {
        let from =
            crate::backup::catalog::gtid::GtidState::parse(from).map_err(ArchiveError::of)?;
        let to = crate::backup::binlog::topup::Target {
            host: to.host.clone(),
            port: to.port,
            user: to.user.clone(),
            password: to.password.clone(),
            lock: to.lock.clone(),
        };
        let r = self.0.apply(&from, &to).await.map_err(ArchiveError::of)?;
        Ok(crate::failover::archive::Applied {
            transactions: r.transactions,
            first_gtid: r.first_gtid,
            last_gtid: r.last_gtid,
            seconds: r.seconds,
        })
    }
}
