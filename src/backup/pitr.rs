//! The PITR operations the CLI and the daemon call: run an archiver under
//! the job's binlog lease, report windows, restore to a point in time.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::backup::binlog::archive::{Archiver, Stats};
use crate::backup::binlog::replay::{self, Plan, Replayed, Until};
use crate::backup::binlog::topup::TopUp;
use crate::backup::binlog::window::{self, bases, Report};
use crate::backup::catalog::gtid::GtidState;
use crate::backup::catalog::segment;
use crate::backup::catalog::Catalog;
use crate::backup::policy::{Job, SourceSpec};
use crate::error::{Error, Result};

/// The lease a job's archiver holds: not the backup's (they run side by side).
pub fn lease_name(job: &str) -> String {
    format!("{job}@binlog")
}

/// How long a killed archiver blocks its successor (renewed every third).
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// Runs the job's archiver until `cancel`, holding `<job>@binlog`'s lease
/// in the store, so that a daemon and a standalone `cexdr binlog archive`
/// never archive the same job at once (the second gets exit 3).
/// `metrics_file`: a node_exporter textfile rewritten every 5 s (atomically).
pub async fn archive(
    cat: &Catalog,
    job: &Job,
    ttl: Duration,
    stats: Arc<Stats>,
    metrics_file: Option<std::path::PathBuf>,
    cancel: CancellationToken,
) -> Result<()> {
    let writer = metrics_file.map(|path| {
        let (stats, name, stop) = (stats.clone(), job.name.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = write_atomic(&path, &stats.render(&name, Utc::now())) {
                    tracing::warn!(error = %crate::error::one_line(&e), "could not write the metrics file");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        })
    });
    let r = archive_inner(cat, job, ttl, stats, cancel).await;
    if let Some(w) = writer {
        w.abort();
    }
    r
}

/// Writes `text` to `path` through a temporary file in the same folder.
fn write_atomic(path: &std::path::Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{:08x}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        rand::random::<u32>()
    ));
    let res = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| Error::io(format!("writing metrics file {}", path.display()), e))
}

async fn archive_inner(
    cat: &Catalog,
    job: &Job,
    ttl: Duration,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> Result<()> {
    let SourceSpec::Mysql(mysql) = &job.source else {
        return Err(Error::Usage(format!(
            "job {} is a {} job; binlog archiving applies to mysql jobs",
            job.name,
            job.source.kind()
        )));
    };
    let Some(spec) = mysql.binlog.clone() else {
        return Err(Error::Usage(format!(
            "job {} has no `binlog` table; add binlog = {{}} to archive its binlog (docs/pitr.md)",
            job.name
        )));
    };
    cat.store()
        .preflight()
        .await
        .map_err(|e| e.in_job(&job.name))?;
    let a = Archiver {
        cat,
        job: job.name.clone(),
        mysql: mysql.clone(),
        spec,
        compression: job.compression,
        encryption: job.encryption.clone(),
        stats,
    };
    crate::backup::lease::with_lease(
        cat.store().clone(),
        &lease_name(&job.name),
        ttl,
        cancel.clone(),
        |token| async move {
            // Held from here until the closure returns (then released).
            a.stats.lease_held.store(1, Ordering::Relaxed);
            let r = a.run(token.clone()).await;
            a.stats.lease_held.store(0, Ordering::Relaxed);
            r?;
            if token.is_cancelled() && !cancel.is_cancelled() {
                return Err(Error::Interrupted); // the lease was lost: with_lease names the holder
            }
            Ok(())
        },
    )
    .await
    .map_err(|e| e.in_job(&job.name))
}

/// Opens `job`'s archive for a promotion's top-up: reads the policy and
/// checks that `job` is a mysql job with a binlog archive; `identity`: an
/// age identity file for encrypted segments.
pub async fn open_topup(
    policy: &std::path::Path,
    job: &str,
    identity: Option<&std::path::Path>,
) -> Result<TopUp> {
    let p = crate::backup::policy::Policy::load(policy)?;
    let j = p.job(job)?;
    match &j.source {
        SourceSpec::Mysql(m) if m.binlog.is_some() => {}
        _ => {
            return Err(Error::Usage(format!(
                "job {job} of {} has no binlog archive (a mysql job with binlog = {{…}})",
                policy.display()
            )))
        }
    }
    let ids = match identity {
        Some(f) => Some(crate::pipeline::encrypt::Identities::from_file(f)?),
        None => None,
    };
    let cat = Catalog::new(crate::store::build(&p.store).await?).with_identities(ids);
    Ok(TopUp::new(cat, job, p.signing_key_file.is_some()))
}

pub async fn report(cat: &Catalog, job: &str) -> Result<Report> {
    let a = segment::load(cat, job, false).await?;
    let b = bases(cat, job).await?;
    Ok(window::report(job, &a, &b))
}

/// What `restore --until` was asked to do.
pub struct Request<'a> {
    pub job: &'a str,
    /// `ID --until`: this base instead of the newest suitable one.
    pub base_id: Option<&'a str>,
    pub until: &'a Until,
    pub to: &'a str,
    pub batch: usize,
    pub dry_run: bool,
    /// The job backs up some of the server's databases (`databases = [..]`):
    /// the replay takes only the base's.
    pub databases_selected: bool,
}

/// Whether a job backs up only some of its server's databases.
pub fn selects_databases(job: &Job) -> bool {
    matches!(&job.source, SourceSpec::Mysql(m) if !m.databases.is_empty())
}

/// `restore --until`, in phases: plan (refuses before touching anything
/// when the archive does not cover the target), check (every planned
/// segment's SHA-256, the programs, `--target-binlog off`'s privilege),
/// restore the base, replay. `dry_run`: the plan only.
pub async fn restore_until(
    cat: &Catalog,
    req: &Request<'_>,
    opts: &crate::backup::source::artifact::RestoreOptions,
) -> Result<(Plan, Option<(String, Replayed)>)> {
    let a = segment::load(cat, req.job, false).await?;
    let b = bases(cat, req.job).await?;
    let mut plan = replay::plan(req.job, &a, &b, req.until, req.base_id)?;
    plan.target_binlog = opts.target_binlog;
    let dbs =
        crate::backup::source::mysql::restore::manifest_dbs(&cat.find(&plan.base).await?.manifest)?;
    for (old, _) in &opts.database_map {
        if !dbs.contains(old) {
            return Err(Error::Usage(format!(
                "--database-map {old}=…: base backup {} has no database {old:?} (it has {})",
                plan.base,
                dbs.join(", ")
            )));
        }
    }
    // Renamed or selected: a transaction of another database must not
    // reach the target under its own name.
    if req.databases_selected || !opts.database_map.is_empty() {
        plan.only_databases = Some(dbs);
    }
    plan.database_map = opts.database_map.clone();
    if req.dry_run {
        return Ok((plan, None));
    }
    let target = check(cat, &a, &plan, req, opts).await?;
    let entry = cat.find(&plan.base).await?;
    let msg = crate::backup::plan::restore::restore(cat, &entry, req.to, opts).await?;
    let r = replay::replay(cat, &a, &plan, &target).await?;
    Ok((plan, Some((msg, r))))
}

/// `restore --job J --until … --to-datadir DIR`: the newest physical base
/// before the cut restored and prepared beside DIR, a private mariadbd
/// started on it, the archive replayed exactly as onto a server, the
/// server stopped cleanly, then the copy placed at DIR. Every refusal of
/// the logical path comes before the first write; a failure leaves DIR as
/// it was.
pub async fn restore_until_datadir(
    cat: &Catalog,
    req: &Request<'_>,
    dir: &std::path::Path,
    o: &crate::backup::source::mysql::physical::restore::DatadirOptions,
) -> Result<(Plan, Option<(String, Replayed)>)> {
    use crate::backup::source::mysql::physical::{self, restore::stage, server::Scratch};
    let a = segment::load(cat, req.job, false).await?;
    let physical_ids: Vec<String> = cat
        .list(Some(req.job))
        .await?
        .into_iter()
        .filter(|e| physical::is_physical(&e.manifest))
        .map(|e| e.manifest.id)
        .collect();
    if let Some(id) = req
        .base_id
        .filter(|id| !physical_ids.iter().any(|p| p == id))
    {
        return Err(Error::Usage(format!(
            "--to-datadir needs a physical base; backup {id} is not a physical backup of job {}",
            req.job
        )));
    }
    let mut b = bases(cat, req.job).await?;
    b.retain(|x| physical_ids.contains(&x.id));
    let mut plan = replay::plan(req.job, &a, &b, req.until, req.base_id)?;
    // The private server has no binary log: nothing to keep out of it.
    plan.target_binlog = crate::backup::plan::restore::TargetBinlog::On;
    if req.dry_run {
        return Ok((plan, None));
    }
    replay::find_program(&["mariadb-binlog", "mysqlbinlog"])?;
    replay::find_program(&["mariadb", "mysql"])?;
    replay::check_segments(cat, &a, &plan).await?;
    let base = cat.find(&plan.base).await?.manifest;
    let task = physical::restore::progress_of(cat, &base).await;
    let staged = stage(cat, &base, dir, o).await?;
    task.done();
    let r = async {
        let server = Scratch::start(staged.path()).await?;
        let t = crate::backup::source::mysql::conn::Target::parse(&server.url())?;
        let target = replay::Target {
            host: t.host,
            port: t.port,
            user: t.user,
            socket: t.socket,
            password: None,
            batch: req.batch,
            session: replay::Session::Restore {
                binlog: plan.target_binlog,
            },
        };
        let r = replay::replay(cat, &a, &plan, &target).await?;
        // The copy's own position, so that replication continues from the
        // cut: the base's GTID set advanced to the last replayed.
        let pos = if plan.cut_gtid.is_empty() {
            plan.base_gtid.clone()
        } else {
            plan.cut_gtid.clone()
        };
        let mut c = server.connect().await?;
        crate::backup::source::mysql::conn::exec(
            &mut c,
            "setting gtid_slave_pos on the restored copy",
            &format!("SET GLOBAL gtid_slave_pos = '{}'", pos.replace('\'', "")),
        )
        .await?;
        drop(c);
        server.shutdown().await?;
        Ok::<_, Error>((r, pos))
    }
    .await;
    match r {
        Ok((r, pos)) => {
            let msg = staged.finish(Some(&pos))?;
            Ok((plan, Some((msg, r))))
        }
        Err(e) => Err(staged.failed(e)),
    }
}

/// Everything a restore needs before its first write: the target's
/// address and password, the programs, every planned segment's bytes.
async fn check(
    cat: &Catalog,
    a: &segment::Archive,
    plan: &Plan,
    req: &Request<'_>,
    opts: &crate::backup::source::artifact::RestoreOptions,
) -> Result<replay::Target> {
    let target = crate::backup::source::mysql::conn::Target::parse(req.to)?;
    let password = match &opts.password_env {
        Some(v) => Some(
            std::env::var(v)
                .map_err(|_| Error::Usage(format!("password variable {v} is not set")))?,
        ),
        None => None,
    };
    replay::find_program(&["mariadb-binlog", "mysqlbinlog"])?;
    replay::find_program(&["mariadb", "mysql"])?;
    replay::check_segments(cat, a, plan).await?;
    replay::prescan(cat, a, plan).await?;
    Ok(replay::Target {
        host: target.host,
        port: target.port,
        user: target.user,
        socket: target.socket,
        password,
        batch: req.batch,
        session: replay::Session::Restore {
            binlog: opts.target_binlog,
        },
    })
}

/// Parses `--until` / `--until-gtid`.
pub fn parse_until(time: Option<&str>, gtid: Option<&str>) -> Result<Until> {
    match (time, gtid) {
        (Some(t), None) => Ok(Until::Time(
            replay::parse_time(t).map_err(|e| Error::Usage(e.to_string()))?,
        )),
        (None, Some(g)) => {
            let s = GtidState::parse(g).map_err(|e| Error::Usage(format!("--until-gtid: {e}")))?;
            if s.is_empty() {
                return Err(Error::Usage("--until-gtid: give at least one GTID".into()));
            }
            Ok(Until::Gtid(s))
        }
        (Some(_), Some(_)) => Err(Error::Usage(
            "give --until or --until-gtid, not both".into(),
        )),
        (None, None) => Err(Error::Usage(
            "give --until TIME or --until-gtid GTID".into(),
        )),
    }
}

pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// One segment's result in `binlog verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentCheck {
    pub seq: u64,
    pub key: String,
    pub ok: bool,
    pub error: Option<String>,
    /// What could not be checked (an encrypted segment without an identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `cexdr binlog verify JOB`: re-reads every segment (SHA-256, size, whole
/// events) and checks continuity; returns the checks and the windows report.
/// `require_signature`: the policy signs, so an unsigned manifest fails too.
pub async fn verify(
    cat: &Catalog,
    job: &str,
    require_signature: bool,
) -> Result<(Vec<SegmentCheck>, Report)> {
    let a = segment::load(cat, job, true).await?;
    let mut checks = Vec::new();
    for s in &a.segments {
        let r = if !s.artifact_present {
            Err(Error::RestoreRefused(format!(
                "segment object {} is missing",
                s.manifest.key
            )))
        } else if matches!(&s.signature_status, Some(st) if !st.is_ok()
            && (require_signature || *st != crate::backup::catalog::signing::SigStatus::Unsigned))
        {
            Err(Error::RestoreRefused(format!(
                "manifest {} signature: {}",
                s.manifest_key,
                s.signature_status
                    .as_ref()
                    .map(|x| x.word())
                    .unwrap_or_default()
            )))
        } else if s.manifest.encryption.is_some() && cat.identities().is_none() {
            replay::check_stored(cat, s).await.map(|_| {
                Some(
                    "content NOT checked: the segment is age-encrypted and no identity was given"
                        .to_string(),
                )
            })
        } else {
            replay::check_one(cat, s).await.map(|_| None)
        };
        let (ok, error, note) = match r {
            Ok(note) => (true, None, note),
            Err(e) => (false, Some(crate::error::one_line(&e)), None),
        };
        checks.push(SegmentCheck {
            seq: s.manifest.seq,
            key: s.manifest.key.clone(),
            ok,
            error,
            note,
        });
    }
    let b = bases(cat, job).await?;
    Ok((checks, window::report(job, &a, &b)))
}

/// Method of the records `cexdr verify` gives for binlog archives.
pub const ARCHIVE_METHOD: &str = "binlog-archive";

/// `cexdr verify --job J` / `--all`: each job's binlog archive gets the
/// checks of `binlog verify` (every segment's SHA-256, size, whole events and
/// manifest signature, the chain and continuity), reported as one
/// verification record per archive: `backup_id` "binlog", method
/// `binlog-archive`, `error` naming every damaged segment's key and every
/// break. A job with nothing archived gives no record. The records are not
/// written to the catalog (a record there belongs to one backup).
pub async fn verify_archives(
    cat: &Catalog,
    jobs: &[&str],
    require_signature: bool,
    cancel: &CancellationToken,
) -> Result<Vec<crate::backup::catalog::Verification>> {
    use crate::backup::catalog::{Status, Verification, TOOL_VERSION};
    let mut out = Vec::new();
    for job in jobs {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let (segs, report) = verify(cat, job, require_signature).await?;
        if segs.is_empty() && report.gaps.is_empty() {
            continue;
        }
        let mut failures: Vec<String> = segs
            .iter()
            .filter(|c| !c.ok)
            .map(|c| {
                format!(
                    "segment {} ({}): {}",
                    c.seq,
                    c.key,
                    c.error.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        let gap_line = |g: &window::Gap| {
            format!(
                "GAP {} after segment {} before {}: {}",
                g.kind,
                g.after_seq
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "-".into()),
                g.before_seq
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "-".into()),
                g.detail
            )
        };
        failures.extend(
            report
                .gaps
                .iter()
                .filter(|g| is_break(&g.kind))
                .map(gap_line),
        );
        let good = segs.iter().filter(|c| c.ok).count();
        let mut checks = vec![format!(
            "{good} of {} segment(s) re-read: sha256, stored size, whole events and manifest signature as recorded",
            segs.len()
        )];
        checks.extend(segs.iter().filter_map(|c| {
            c.note
                .as_ref()
                .map(|n| format!("segment {} ({}): {n}", c.seq, c.key))
        }));
        checks.extend(report.windows.iter().map(|w| {
            format!(
                "restorable window {} .. {} (base {}, segments {}..{})",
                fmt_time(w.from),
                fmt_time(w.to),
                w.base,
                w.first_seq,
                w.last_seq
            )
        }));
        checks.extend(
            report
                .gaps
                .iter()
                .filter(|g| !is_break(&g.kind))
                .map(|g| format!("not a break: {}", gap_line(g))),
        );
        let failed = !failures.is_empty();
        if failed {
            tracing::error!(job = %job, failures = failures.len(), "binlog archive verification failed");
        } else {
            tracing::info!(job = %job, segments = segs.len(), "binlog archive verified");
        }
        out.push(Verification {
            backup_id: "binlog".into(),
            job: job.to_string(),
            at: Utc::now(),
            status: if failed { Status::Failed } else { Status::Ok },
            method: ARCHIVE_METHOD.into(),
            tool_version: TOOL_VERSION.into(),
            host: crate::base::host_name(),
            checks,
            error: failed.then(|| failures.join("; ")),
            details: serde_json::json!({"segments": segs, "report": report}),
        });
    }
    Ok(out)
}

/// Gap kinds that mean the archive itself is broken (not merely "take a base").
pub fn is_break(kind: &str) -> bool {
    !matches!(kind, "no-base" | "before-archive")
}

/// `policy check` for a job that asks for PITR: warnings when the server's
/// binlog is off or not ROW (or cannot be checked). Never an error: the
/// policy itself is valid; the archiver refuses such a server by name.
pub async fn server_warnings(job: &Job) -> Vec<String> {
    use mysql_async::prelude::Queryable;
    let SourceSpec::Mysql(m) = &job.source else {
        return Vec::new();
    };
    if m.binlog.is_none() {
        return Vec::new();
    }
    let server = match crate::backup::source::mysql::conn::Server::new(
        &m.url,
        &m.password,
        m.tls.as_ref(),
    ) {
        Ok(s) => s,
        Err(e) => {
            return vec![format!(
                "job {}: cannot check the server's binlog: {}",
                job.name,
                crate::error::one_line(&e)
            )]
        }
    };
    let mut conn = match server.connect().await {
        Ok(c) => c,
        Err(e) => {
            return vec![format!(
                "job {}: cannot check the server's binlog: {}",
                job.name,
                crate::error::one_line(&e)
            )]
        }
    };
    let mut out = Vec::new();
    // One variable per SELECT (MariaDB 10.11 returned wrong values otherwise).
    let log_bin: Option<i64> = conn.query_first("SELECT @@log_bin").await.ok().flatten();
    let format: Option<String> = conn
        .query_first("SELECT @@global.binlog_format")
        .await
        .ok()
        .flatten();
    if log_bin != Some(1) {
        out.push(format!("job {}: asks for PITR (binlog = {{…}}) but binary logging is off on {} (start the server with --log-bin)", job.name, server.describe()));
    } else if let Some(f) = format.filter(|f| !f.eq_ignore_ascii_case("ROW")) {
        out.push(format!(
            "job {}: asks for PITR but binlog_format is {f} on {}; the archiver needs ROW",
            job.name,
            server.describe()
        ));
    }
    let _ = conn.disconnect().await;
    out
}

/// The method of a point-in-time drill's record (its level is `checksum`:
/// the replay is checked to reach the cut, the rows are not compared with a
/// recorded state, which nothing holds for an arbitrary second).
pub const PITR_DRILL_METHOD: &str = "pitr-restore-test";

/// `cexdr verify [ID] --restore-test URL --until T`: restores the base and
/// replays the archive up to T on a scratch server, under the original
/// database names (replayed events name them), then drops those databases
/// and records the drill beside the base. Refused before any write when
/// the scratch server already has one of them: it never writes into a
/// database it did not create (this also keeps it off the source server).
pub async fn pitr_drill(
    cat: &Catalog,
    req: &Request<'_>,
    password_env: Option<&str>,
) -> Result<crate::backup::catalog::Verification> {
    use crate::backup::source::mysql::conn::Server;
    let dry = Request {
        dry_run: true,
        ..*req
    };
    // A drill's copy stays off the scratch server's binary log, base and
    // replay alike (as `verify --restore-test` keeps its copies).
    let opts = crate::backup::source::artifact::RestoreOptions {
        password_env: password_env.map(str::to_owned),
        target_binlog: crate::backup::source::artifact::TargetBinlog::Off,
        ..Default::default()
    };
    let (plan, _) = restore_until(cat, &dry, &opts).await?;
    let entry = cat.find(&plan.base).await?;
    let dbs = crate::backup::source::mysql::restore::manifest_dbs(&entry.manifest)?;
    let secret = match password_env {
        Some(v) => crate::base::Secret::Env(v.to_owned()),
        None => crate::base::Secret::None,
    };
    let server = Server::new(req.to, &secret, None)?;
    let mut conn = server.connect().await?;
    refuse_existing(&mut conn, &server, &dbs, req.job).await?;
    let t0 = std::time::Instant::now();
    let res = restore_until(cat, req, &opts).await;
    let seconds = t0.elapsed().as_secs_f64();
    let drop_error = drop_drill_dbs(&mut conn, &dbs).await;
    let v = drill_record(
        req.job,
        &plan,
        &server,
        &res,
        seconds,
        drop_error.as_deref(),
    );
    cat.record_verification(&entry.manifest, &v).await?;
    Ok(v)
}

/// Refuses a scratch server that already has one of the base's databases
/// (the drill restores under the original names).
async fn refuse_existing(
    conn: &mut mysql_async::Conn,
    server: &crate::backup::source::mysql::conn::Server,
    dbs: &[String],
    job: &str,
) -> Result<()> {
    let have = crate::backup::source::mysql::conn::rows(
        conn,
        "listing the scratch server's databases",
        "SHOW DATABASES",
    )
    .await?;
    if let Some(d) = have
        .iter()
        .filter_map(|r| r.first().cloned().flatten())
        .find(|d| dbs.contains(d))
    {
        return Err(Error::RestoreRefused(format!(
            "point-in-time drill of job {}: {} already has database `{d}`; the drill restores under the original names and never writes into a database it did not create (use a scratch server without them)",
            job,
            server.describe()
        )));
    }
    Ok(())
}

/// Drops what the drill created, also when it failed; off the binary log
/// like the drill's writes (a refusal here was already the restore's).
/// The last database that could not be dropped, and why.
async fn drop_drill_dbs(conn: &mut mysql_async::Conn, dbs: &[String]) -> Option<String> {
    use crate::backup::source::mysql::conn::exec;
    let _ = exec(
        conn,
        "turning sql_log_bin off",
        "SET SESSION sql_log_bin = 0",
    )
    .await;
    let mut drop_error = None;
    for d in dbs {
        let q = format!("DROP DATABASE IF EXISTS `{}`", d.replace('`', "``"));
        if let Err(e) = exec(conn, "dropping the drill's databases", &q).await {
            drop_error = Some(format!("{d}: {e}"));
        }
    }
    drop_error
}

/// The drill's record: passed when the replay reached the cut and the
/// drill's databases are gone again.
fn drill_record(
    job: &str,
    plan: &Plan,
    server: &crate::backup::source::mysql::conn::Server,
    res: &Result<(Plan, Option<(String, Replayed)>)>,
    seconds: f64,
    drop_error: Option<&str>,
) -> crate::backup::catalog::Verification {
    use crate::backup::catalog::{Status, Verification, TOOL_VERSION};
    let (status, error, details) = match res {
        Ok((_, Some((_, r)))) => (
            Status::Ok,
            None,
            serde_json::json!({"until": plan.until, "base_gtid": plan.base_gtid, "cut_gtid": plan.cut_gtid,
                "segments": plan.segments.len(), "transactions": r.transactions, "rows": r.rows,
                "replay_seconds": r.seconds, "restore_seconds": seconds, "seconds": seconds, "last_gtid": r.last_gtid}),
        ),
        Ok((_, None)) => unreachable!("not a dry run"),
        Err(e) => (
            Status::Failed,
            Some(crate::error::one_line(e)),
            serde_json::json!({"until": plan.until, "cut_gtid": plan.cut_gtid, "restore_seconds": seconds, "seconds": seconds}),
        ),
    };
    let (status, error) = match (status, error, drop_error) {
        (Status::Ok, None, Some(d)) => (
            Status::Failed,
            Some(format!("the drill's databases were not all dropped: {d}")),
        ),
        (s, e, _) => (s, e),
    };
    Verification {
        backup_id: plan.base.clone(),
        job: job.to_string(),
        at: Utc::now(),
        status,
        method: PITR_DRILL_METHOD.into(),
        tool_version: TOOL_VERSION.into(),
        host: crate::base::host_name(),
        checks: vec![
            format!(
                "base {} restored into {} under its own database names",
                plan.base,
                server.describe()
            ),
            format!(
                "{} archived segment(s) checked (SHA-256, size) and replayed from {} to {} ({})",
                plan.segments.len(),
                plan.base_gtid,
                plan.cut_gtid,
                plan.until
            ),
            "the replay reached the cut".into(),
            format!("restore + replay took {seconds:.1} s (the point-in-time RTO)"),
            "the drill's databases dropped again".into(),
        ],
        error,
        details,
    }
}
