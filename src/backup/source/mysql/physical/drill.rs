//! The restore test of a physical backup (`verify --restore-test`, a
//! drill): the chain restored and prepared into a scratch datadir, a
//! scratch `mariadbd` started on it, then:
//! - every table, view and sequence the server shows is one the backup's
//!   stream carried (its `.frm`), and every `.frm` the stream carried is
//!   one the server shows;
//! - `CHECK TABLE … EXTENDED` passes for every table;
//! - each table's row count and `CHECKSUM TABLE` are recorded, so that two
//!   drills of the same backup, or a drill and the source at the backup's
//!   GTID, can be compared.
//!
//! The server and the scratch folder are removed whatever the outcome. The
//! measured seconds (fetch, extract, prepare, start, checks) are the RTO
//! of this backup on this host.
use std::collections::BTreeSet;

use chrono::Utc;
use serde_json::json;

use super::restore::{stage, DatadirOptions};
use super::server::Scratch;
use crate::backup::catalog::{Catalog, Manifest, Status, Verification, TOOL_VERSION};
use crate::backup::source::mysql::conn::rows;
use crate::backup::source::ScratchTarget;
use crate::error::{one_line, Error, Result};

/// Schemas the server makes up rather than stores.
const VIRTUAL_SCHEMAS: [&str; 3] = ["information_schema", "performance_schema", "sys"];

pub async fn restore_test(
    catalog: &Catalog,
    m: &Manifest,
    target: &ScratchTarget,
) -> Result<Verification> {
    let t0 = std::time::Instant::now();
    let root = target.folder.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = root.join(format!("cexdr-drill-{}-{}", m.id, rand::random::<u32>()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| Error::io(format!("creating {}", scratch.display()), e))?;
    let r = run(catalog, m, &scratch.join("datadir"), target).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let seconds = t0.elapsed().as_secs_f64();
    let (checks, error, tables) = match r {
        Ok(Checked {
            checks,
            mismatches,
            tables,
        }) => (
            checks,
            (!mismatches.is_empty()).then(|| mismatches.join("; ")),
            tables,
        ),
        Err(e) => (Vec::new(), Some(one_line(&e)), Vec::new()),
    };
    Ok(Verification {
        backup_id: m.id.clone(),
        job: m.job.clone(),
        at: Utc::now(),
        status: if error.is_none() {
            Status::Ok
        } else {
            Status::Failed
        },
        method: "restore-test".into(),
        tool_version: TOOL_VERSION.into(),
        host: crate::base::host_name(),
        checks,
        error,
        details: json!({
            "target": "scratch mariadbd on a scratch datadir",
            "seconds": seconds,
            "tables": tables,
        }),
    })
}

struct Checked {
    checks: Vec<String>,
    mismatches: Vec<String>,
    /// `[db.table, rows, checksum]` of every base table.
    tables: Vec<serde_json::Value>,
}

async fn run(
    catalog: &Catalog,
    m: &Manifest,
    datadir: &std::path::Path,
    target: &ScratchTarget,
) -> Result<Checked> {
    let staged = stage(catalog, m, datadir, &DatadirOptions::default()).await?;
    let prepared = format!(
        "restored and prepared {} backup(s) of the chain into a scratch datadir",
        m.depends_on().len() + 1
    );
    let server = Scratch::start(staged.path()).await?;
    let limit = target
        .timeout
        .unwrap_or(std::time::Duration::from_secs(24 * 3600));
    let mut out = tokio::time::timeout(limit, check(m, &server))
        .await
        .map_err(|_| {
            Error::source_err(
                format!("restore test of {}", m.id),
                format!("the checks took longer than {} s", limit.as_secs()),
            )
        })??;
    server.shutdown().await?;
    out.checks.insert(0, prepared);
    out.checks
        .push("scratch server shut down cleanly; scratch datadir removed".into());
    Ok(out)
}

/// The checks on the running scratch server.
async fn check(m: &Manifest, server: &Scratch) -> Result<Checked> {
    let mut c = server.connect().await?;
    let listed = rows(
        &mut c,
        "listing the restored tables",
        "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys') \
         ORDER BY 1, 2",
    )
    .await?;
    let mut shown = BTreeSet::new();
    let mut base_tables = Vec::new();
    for r in &listed {
        let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let (db, t, kind) = (get(0), get(1), get(2));
        if kind == "BASE TABLE" || kind == "SYSTEM VERSIONED" {
            base_tables.push((db.clone(), t.clone()));
        }
        shown.insert(format!("{db}/{t}"));
    }
    let carried = carried_objects(m);
    let mut mismatches = Vec::new();
    for x in carried.difference(&shown) {
        mismatches.push(format!(
            "{x}: in the backup's stream (.frm) but not shown by the restored server"
        ));
    }
    for x in shown.difference(&carried) {
        mismatches.push(format!(
            "{x}: shown by the restored server but no .frm in the backup's stream"
        ));
    }
    let mut checks = vec![format!(
        "{} tables, views and sequences shown by the server, each carried by the backup's stream ({} .frm files)",
        shown.len(),
        carried.len()
    )];
    let mut tables = Vec::new();
    let mut total_rows: u64 = 0;
    for (db, t) in &base_tables {
        let name = format!("`{}`.`{}`", db.replace('`', "``"), t.replace('`', "``"));
        let r = rows(
            &mut c,
            "CHECK TABLE",
            &format!("CHECK TABLE {name} EXTENDED"),
        )
        .await?;
        // The last row is the verdict; earlier ones are notes.
        let verdict = r
            .last()
            .map(|row| {
                (
                    row.get(2).cloned().flatten().unwrap_or_default(),
                    row.get(3).cloned().flatten().unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        if !(verdict.0 == "status" && verdict.1 == "OK") {
            mismatches.push(format!("CHECK TABLE {db}.{t}: {} {}", verdict.0, verdict.1));
        }
        let n = rows(
            &mut c,
            "counting rows",
            &format!("SELECT COUNT(*) FROM {name}"),
        )
        .await?;
        let count: u64 = n
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let s = rows(&mut c, "CHECKSUM TABLE", &format!("CHECKSUM TABLE {name}")).await?;
        let sum = s.first().and_then(|r| r.get(1).cloned().flatten());
        total_rows += count;
        tables.push(json!([format!("{db}.{t}"), count, sum]));
    }
    let _ = c.disconnect().await;
    checks.push(format!(
        "CHECK TABLE EXTENDED on {} tables: {}",
        base_tables.len(),
        if mismatches.iter().any(|m| m.starts_with("CHECK TABLE")) {
            "FAILED"
        } else {
            "all OK"
        }
    ));
    checks.push(format!(
        "{total_rows} rows counted and every table's CHECKSUM TABLE recorded"
    ));
    Ok(Checked {
        checks,
        mismatches,
        tables,
    })
}

/// `db/name` of every `.frm` the backup's stream carried (its chain's last
/// link lists every file, `.frm` files whole).
fn carried_objects(m: &Manifest) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in m.details["datadir_files"].as_array().into_iter().flatten() {
        let path = f[0].as_str().unwrap_or("");
        let Some(stem) = path.strip_suffix(".frm") else {
            continue;
        };
        let Some((db, name)) = stem.split_once('/') else {
            continue;
        };
        if VIRTUAL_SCHEMAS.contains(&db) || name.contains('/') {
            continue;
        }
        out.insert(format!("{}/{}", decode(db), decode(name)));
    }
    out
}

/// The server's file name encoding (`@0024` for `$`, `@002d` for `-`, …)
/// back to the name.
fn decode(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('@') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 5);
        match code
            .and_then(|c| u32::from_str_radix(c, 16).ok())
            .and_then(char::from_u32)
        {
            Some(ch) => {
                out.push(ch);
                rest = &rest[i + 5..];
            }
            None => {
                out.push('@');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_decode_to_table_names() {
        assert_eq!(super::decode("my@002dtable"), "my-table");
        assert_eq!(super::decode("a@0024b"), "a$b");
        assert_eq!(super::decode("plain"), "plain");
        assert_eq!(super::decode("odd@zz"), "odd@zz");
    }
}
