//! `cexdr failover` and `cexdr runbook check`.
use std::path::PathBuf;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::print_json;
use crate::error::{exit, Error, Result};

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

pub async fn failover(args: FailoverArgs, json: bool, cancel: CancellationToken) -> Result<i32> {
    use crate::failover::engine;
    if let Some(FailoverCmd::Status {
        run,
        runbook,
        state_dir,
    }) = args.cmd
    {
        let rb = engine::load(&runbook, state_dir.as_deref())?;
        let dir = crate::failover::journal::runbook_dir(&rb.state_dir, &rb.name);
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
        json,
    };
    let doc = engine::failover(&rb, &opts, cancel).await?;
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
