//! `cexdr restore ID --to TARGET`.
use std::path::Path;

use clap::Args;

use super::{open_catalog, CliKeys};
use crate::backup::policy::Policy;
use crate::backup::restore;
use crate::error::{exit, Result};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup id (see `catalog list`).
    pub id: String,
    /// Target: a directory (files), mysql://user@host:port (mysql), a file
    /// or, for a cluster, a directory (redis).
    #[arg(long)]
    pub to: String,
    /// Restore over an existing, non-empty target.
    #[arg(long)]
    pub force: bool,
    /// MySQL: environment variable with the target server's password.
    #[arg(long)]
    pub password_env: Option<String>,
    /// MySQL: restore database OLD as NEW (repeatable), as OLD=NEW.
    #[arg(long = "database-map", value_parser = parse_map)]
    pub database_map: Vec<(String, String)>,
    /// MySQL: parallel connections (default: number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Files: restore symlinks that point outside the target (e.g.
    /// absolute ones) as links; nothing is ever written through them.
    #[arg(long)]
    pub allow_external_links: bool,
}

fn parse_map(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(format!("{s:?} is not OLD=NEW")),
    }
}

pub async fn restore(policy_file: &Path, keys: &CliKeys, a: RestoreArgs) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let catalog = open_catalog(&policy, keys).await?;
    let e = catalog.find(&a.id).await?;
    let opts = restore::RestoreOptions {
        force: a.force,
        password_env: a.password_env,
        database_map: a.database_map,
        threads: a.threads,
        allow_external_links: a.allow_external_links,
    };
    let msg = restore::restore(&catalog, &e, &a.to, &opts).await?;
    println!("{msg}");
    Ok(exit::OK)
}
