//! `cexdr completions SHELL` and `cexdr manpage`: generated from the clap
//! definitions, so they never drift from the real flags.
use std::io::Write;
use std::path::Path;

use crate::error::{exit, Error, Result};

pub use clap_complete::Shell;

/// Prints the completion script of `cli` (the clap tree) for `shell` on stdout.
pub fn print(mut cli: clap::Command, shell: Shell) -> Result<i32> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cli, "cexdr", &mut out);
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| Error::io("writing the completion script to stdout", e))?;
    Ok(exit::OK)
}

/// Writes cexdr.1 and one page per subcommand (cexdr-catalog-list.1, …)
/// into `out`, each through a temporary name; prints the paths.
pub fn manpages(cli: clap::Command, out: &Path) -> Result<i32> {
    std::fs::create_dir_all(out)
        .map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let mut cmd = cli.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, out, &mut written)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(exit::OK)
}

fn write_pages(
    cmd: clap::Command,
    out: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = out.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .map_err(|e| Error::io(format!("rendering {}", path.display()), e))?;
    let tmp = out.join(format!(".{}.tmp", man.get_filename()));
    std::fs::write(&tmp, &page)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), e)
        })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), out, written)?;
    }
    Ok(())
}
