//! `cexdr restore ID --to TARGET`.
use std::path::Path;

use clap::Args;

use crate::backup::plan::restore::{self, TargetBinlog};
use crate::backup::policy::Policy;
use crate::cli::keys::{open_catalog, CliKeys};
use crate::cli::output::print_json;
use crate::error::{exit, Error, Result};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup id (see `catalog list`); with --until, the base to start from.
    #[arg(required_unless_present = "job")]
    pub id: Option<String>,
    /// PITR: the job whose newest base at or before the target is used.
    #[arg(long, conflicts_with = "id")]
    pub job: Option<String>,
    /// PITR: restore exactly the transactions committed at or before this
    /// time (RFC 3339, or "YYYY-MM-DD HH:MM:SS" in UTC).
    #[arg(long)]
    pub until: Option<String>,
    /// PITR: ... up to and including this GTID position (e.g. 0-1-4711).
    #[arg(long)]
    pub until_gtid: Option<String>,
    /// PITR: print the plan (base, segments, GTID range, size); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// PITR: replayed transactions merged into one commit.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub batch: u32,
    /// Target: a directory (files), mysql://user@host:port (mysql), a file
    /// or, for a cluster, a directory (redis).
    #[arg(
        long,
        required_unless_present = "to_datadir",
        conflicts_with = "to_datadir"
    )]
    pub to: Option<String>,
    /// MySQL physical backups: rebuild a datadir DIR a server starts on
    /// (mbstream -x, mariadb-backup --prepare; DIR untouched on failure).
    #[arg(long, value_name = "DIR")]
    pub to_datadir: Option<std::path::PathBuf>,
    /// With --to-datadir: owner of the files (default: mysql when run as root).
    #[arg(long, requires = "to_datadir")]
    pub owner: Option<String>,
    /// Restore over an existing, non-empty target.
    #[arg(long)]
    pub force: bool,
    /// MySQL: environment variable with the target server's password.
    #[arg(long)]
    pub password_env: Option<String>,
    /// MySQL: restore database OLD as NEW (repeatable), as OLD=NEW.
    #[arg(long = "database-map", value_parser = parse_map)]
    pub database_map: Vec<(String, String)>,
    /// MySQL: whether the target's binary log records the restore, the base
    /// and the replay alike: `on` (its replicas get it) or `off`
    /// (`sql_log_bin = 0`, needs BINLOG ADMIN; its replicas do not get it).
    #[arg(long, value_parser = parse_binlog, default_value = "on")]
    pub target_binlog: TargetBinlog,
    /// MySQL: parallel connections (default: number of cores); each table
    /// is loaded whole on one of them (docs/mysql.md, "Restore").
    #[arg(long)]
    pub threads: Option<usize>,
    /// Files: restore symlinks that point outside the target (e.g.
    /// absolute ones) as links; nothing is ever written through them.
    #[arg(long)]
    pub allow_external_links: bool,
}

/// A `--database-map` value that is not `OLD=NEW`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not OLD=NEW")]
struct NotOldNew(String);

fn parse_map(s: &str) -> std::result::Result<(String, String), NotOldNew> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(NotOldNew(s.to_owned())),
    }
}

/// A `--target-binlog` value other than on/off.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: expected on or off")]
struct NotOnOff(String);

fn parse_binlog(s: &str) -> std::result::Result<TargetBinlog, NotOnOff> {
    match s {
        "on" => Ok(TargetBinlog::On),
        "off" => Ok(TargetBinlog::Off),
        _ => Err(NotOnOff(s.to_owned())),
    }
}

pub async fn restore(
    policy_file: &Path,
    json: bool,
    keys: &CliKeys,
    a: RestoreArgs,
) -> Result<i32> {
    let policy = Policy::load(policy_file)?;
    let catalog = open_catalog(&policy, keys).await?;
    let opts = restore::RestoreOptions {
        force: a.force,
        password_env: a.password_env,
        database_map: a.database_map,
        threads: a.threads,
        allow_external_links: a.allow_external_links,
        target_binlog: a.target_binlog,
    };
    let RestoreArgs {
        id,
        job,
        until,
        until_gtid,
        dry_run,
        batch,
        to,
        to_datadir,
        owner,
        ..
    } = a;
    let pitr = until.is_some() || until_gtid.is_some() || job.is_some();
    let target = if pitr {
        Some(crate::backup::pitr::parse_until(
            until.as_deref(),
            until_gtid.as_deref(),
        )?)
    } else if dry_run {
        return Err(Error::Usage(
            "--dry-run applies to point-in-time restores (--until / --until-gtid)".into(),
        ));
    } else {
        None
    };
    // PITR: the job named, or the base's.
    let job = match (&target, &job, &id) {
        (None, _, _) => None,
        (Some(_), Some(j), _) => Some(policy.job(j)?.name.clone()),
        (Some(_), None, Some(i)) => Some(catalog.find(i).await?.manifest.job),
        (Some(_), None, None) => {
            return Err(Error::Usage("give --job J or a base backup id".into()))
        }
    };
    // The --to path fills in its target and database selection.
    let req = || {
        job.as_deref()
            .zip(target.as_ref())
            .map(|(job, until)| crate::backup::pitr::Request {
                job,
                base_id: id.as_deref(),
                until,
                to: "",
                batch: batch as usize,
                dry_run,
                databases_selected: false,
            })
    };
    if let Some(dir) = to_datadir {
        return to_datadir_restore(json, &catalog, &opts, owner, &dir, req(), id.as_deref()).await;
    }
    let to = to.expect("clap requires --to without --to-datadir");
    if let Some(mut r) = req() {
        r.to = &to;
        r.databases_selected = policy
            .job(r.job)
            .map(crate::backup::pitr::selects_databases)
            .unwrap_or(false);
        let (plan, done) = crate::backup::pitr::restore_until(&catalog, &r, &opts).await?;
        print_pitr(json, &plan, done);
        return Ok(exit::OK);
    }
    let id = id.expect("clap requires an id without --job");
    let e = catalog.find(&id).await?;
    if opts.target_binlog == TargetBinlog::Off && e.manifest.kind != "mysql" {
        return Err(Error::Usage(format!(
            "--target-binlog applies to mysql restores; backup {id} is a {} backup",
            e.manifest.kind
        )));
    }
    let msg = restore::restore(&catalog, &e, &to, &opts).await?;
    println!("{msg}");
    Ok(exit::OK)
}

/// `--to-datadir DIR`: a physical backup (or, with `req`, a point in time
/// onto a physical base) into a datadir.
async fn to_datadir_restore(
    json: bool,
    catalog: &crate::backup::catalog::Catalog,
    opts: &restore::RestoreOptions,
    owner: Option<String>,
    dir: &Path,
    req: Option<crate::backup::pitr::Request<'_>>,
    id: Option<&str>,
) -> Result<i32> {
    use crate::backup::source::mysql::physical::restore::{restore_datadir, DatadirOptions};
    if !opts.database_map.is_empty() {
        return Err(Error::Usage(
            "--database-map does not apply to --to-datadir: a physical backup restores the whole server".into(),
        ));
    }
    let o = DatadirOptions {
        force: opts.force,
        owner,
        threads: opts.threads,
    };
    if let Some(req) = req {
        let (plan, done) =
            crate::backup::pitr::restore_until_datadir(catalog, &req, dir, &o).await?;
        print_pitr(json, &plan, done);
        return Ok(exit::OK);
    }
    let id = id.expect("clap requires an id without --job");
    let e = catalog.find(id).await?;
    println!("{}", restore_datadir(catalog, &e.manifest, dir, &o).await?);
    Ok(exit::OK)
}

/// A point-in-time restore's plan, and what was restored and replayed.
fn print_pitr(
    json: bool,
    plan: &crate::backup::binlog::replay::Plan,
    done: Option<(String, crate::backup::binlog::replay::Replayed)>,
) {
    match done {
        None if json => print_json(plan),
        None => print!("{}", plan.render()),
        Some((msg, r)) if json => {
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
            if plan.only_databases.is_some() {
                println!("skipped {} transaction(s) of other databases", r.skipped);
            }
        }
    }
}
