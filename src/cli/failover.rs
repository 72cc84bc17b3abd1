//! `cexdr failover` and `cexdr failover status`: parse, call the engine,
//! render. The terminal side of the engine's `Ui` lives here (the engine
//! prints nothing and reads nothing).
use std::io::{BufRead, IsTerminal, Write};

use tokio_util::sync::CancellationToken;

use super::{print_json, FailoverArgs, FailoverCmd};
use crate::error::{exit, Error, Result};
use crate::failover::engine::{self, Ui};
use crate::failover::journal;

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

pub(super) async fn command(
    args: FailoverArgs,
    json: bool,
    cancel: CancellationToken,
) -> Result<i32> {
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
    };
    let doc = engine::failover(&rb, &opts, &Terminal { json }, cancel).await?;
    if json {
        print_json(&doc);
    }
    Ok(exit::OK)
}
