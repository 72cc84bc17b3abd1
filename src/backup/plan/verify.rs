//! Verification: re-read every stored object, recompute its SHA-256,
//! decompress the whole stream, check sizes and the content's own structure,
//! and record the result in the catalog.
use chrono::Utc;

use crate::backup::catalog::{
    Artifact, Catalog, Entry, Manifest, Status, Verification, TOOL_VERSION,
};
use crate::backup::source::{self, ScratchTarget};
use crate::base::progress::{self, Total, Unit};
use crate::error::{one_line, Error, Result};
use crate::pipeline;
use crate::pipeline::Compression;

/// Checks one artifact; returns what was checked or the first failure.
async fn check_artifact(
    catalog: &Catalog,
    m: &Manifest,
    compression: Compression,
    a: &Artifact,
) -> Result<Vec<String>> {
    check_head(catalog, a).await?;
    let (stream, stored) = pipeline::tally(
        progress::counted(
            catalog.store().get(&a.key).await?,
            catalog.progress().clone(),
        ),
        true,
    );
    // Encrypted and no key here: the stored bytes can still be checked.
    let content_checked = m.encryption.is_none() || catalog.identities().is_some();
    let content = if !content_checked {
        source::drain(stream)
            .await
            .map(|_| (a.source_bytes, vec![]))
    } else {
        let plain = match (&m.encryption, catalog.identities()) {
            (Some(_), Some(ids)) => crate::pipeline::encrypt::decrypt(stream, ids.clone()),
            _ => stream,
        };
        m.kind
            .ops()
            .validate(pipeline::decompress(plain, compression))
            .await
    };
    let sha = stored.sha256();
    let content = compare(catalog, a, &stored, &sha, content)?;
    Ok(checked(m, compression, a, &sha, content, content_checked))
}

/// A failed check of artifact `a`.
fn verify_error(catalog: &Catalog, a: &Artifact, msg: String) -> Error {
    Error::Store {
        store: catalog.store().describe(),
        op: "verify",
        key: a.key.clone(),
        msg,
    }
}

/// The stored object is there, with the manifest's size.
async fn check_head(catalog: &Catalog, a: &Artifact) -> Result<()> {
    let Some(head) = catalog.store().head(&a.key).await? else {
        return Err(verify_error(catalog, a, "object is missing".into()));
    };
    if head.size != a.stored_bytes {
        return Err(verify_error(
            catalog,
            a,
            format!(
                "stored size {} differs from the manifest's {}",
                head.size, a.stored_bytes
            ),
        ));
    }
    Ok(())
}

/// The bytes read (`stored`, hashed to `sha`) and the content's check
/// against the manifest; the decompressed size and the content's checks.
fn compare(
    catalog: &Catalog,
    a: &Artifact,
    stored: &pipeline::Tally,
    sha: &str,
    content: Result<(u64, Vec<String>)>,
) -> Result<(u64, Vec<String>)> {
    let mismatch = |msg: String| verify_error(catalog, a, msg);
    // A checksum mismatch explains a decompression error: report it first.
    if stored.bytes() == a.stored_bytes && sha != a.sha256 {
        return Err(mismatch(format!(
            "sha256 {sha} differs from the manifest's {}",
            a.sha256
        )));
    }
    let (decompressed, checks) = content?;
    if stored.bytes() != a.stored_bytes {
        return Err(mismatch(format!(
            "read {} bytes, the manifest says {}",
            stored.bytes(),
            a.stored_bytes
        )));
    }
    if sha != a.sha256 {
        return Err(mismatch(format!(
            "sha256 {sha} differs from the manifest's {}",
            a.sha256
        )));
    }
    if decompressed != a.source_bytes {
        return Err(mismatch(format!(
            "decompressed to {decompressed} bytes, the manifest says {}",
            a.source_bytes
        )));
    }
    Ok((decompressed, checks))
}

/// What was checked of an artifact that passed.
fn checked(
    m: &Manifest,
    compression: Compression,
    a: &Artifact,
    sha: &str,
    (decompressed, mut checks): (u64, Vec<String>),
    content_checked: bool,
) -> Vec<String> {
    let mut out = vec![format!(
        "{}: sha256 {} matches ({} bytes stored)",
        a.name, sha, a.stored_bytes
    )];
    if !content_checked {
        out.push(format!(
            "{}: content NOT checked: the backup is age-encrypted and no identity was given",
            a.name
        ));
        return out;
    }
    if m.encryption.is_some() {
        out.push(format!("{}: decrypted with the given identity", a.name));
    }
    out.push(format!(
        "{}: {} stream decompressed to {} bytes as recorded",
        a.name,
        compression.name(),
        decompressed
    ));
    out.extend(checks.drain(..).map(|c| format!("{}: {c}", a.name)));
    out
}

/// Method of the record `verify` writes: checksum and full decompression.
pub const STREAM: &str = "stream";
/// Method of the record written right after a backup (`verify-after-backup`).
pub const READ_BACK: &str = "read-back";
/// Method of a restore test (`verify --restore-test`, a drill).
pub const RESTORE_TEST: &str = "restore-test";

/// Verifies one backup and records the result. The returned record says
/// whether it passed; only a failure to record is an `Err`.
pub async fn verify(catalog: &Catalog, entry: &Entry) -> Result<Verification> {
    check(catalog, &entry.manifest, STREAM).await
}

/// The read-back after a backup: the same checks as `verify`, recorded
/// with method `read-back` so that a damaged upload is told apart.
pub async fn read_back(catalog: &Catalog, m: &Manifest) -> Result<Verification> {
    check(catalog, m, READ_BACK).await
}

async fn check(catalog: &Catalog, m: &Manifest, method: &str) -> Result<Verification> {
    let compression: Compression = m.compression;
    let mut checks = Vec::new();
    let mut error = None;
    let task = progress::begin(
        catalog.progress(),
        &format!("verify {}", m.id),
        Total::Exact(m.stored_bytes),
        Unit::Bytes,
    );
    for a in &m.artifacts {
        match check_artifact(catalog, m, compression, a).await {
            Ok(c) => checks.extend(c),
            Err(e) => {
                error = Some(one_line(&e));
                break;
            }
        }
    }
    if error.is_none() {
        match m.kind.ops().check_dependencies(catalog, m).await {
            Ok(c) => checks.extend(c),
            Err(e) => error = Some(one_line(&e)),
        }
    }
    if error.is_none() {
        task.done();
    } else {
        drop(task);
    }
    let v = Verification {
        backup_id: m.id.clone(),
        job: m.job.clone(),
        at: Utc::now(),
        status: if error.is_none() {
            Status::Ok
        } else {
            Status::Failed
        },
        method: method.into(),
        tool_version: TOOL_VERSION.into(),
        host: crate::base::host_name(),
        checks,
        error,
        details: serde_json::Value::Null,
    };
    catalog.record_verification(m, &v).await?;
    match v.status {
        Status::Ok => tracing::info!(job = %m.job, id = %m.id, method, "verified"),
        Status::Failed => {
            tracing::error!(job = %m.job, id = %m.id, method, error = v.error.as_deref().unwrap_or(""), "verification failed")
        }
    }
    Ok(v)
}

/// A restore test: the kind restores into a scratch target and compares
/// with the manifest; the result is recorded (signed) like any
/// verification, failures included. `verify --restore-test` and drills
/// both come here.
pub async fn restore_test(
    catalog: &Catalog,
    entry: &Entry,
    target: &ScratchTarget,
) -> Result<Verification> {
    let m = &entry.manifest;
    let task = progress::begin(
        catalog.progress(),
        &format!("restore test {}", m.id),
        Total::Exact(m.stored_bytes),
        Unit::Bytes,
    );
    let t0 = std::time::Instant::now();
    let res = m.kind.ops().restore_test(catalog, m, target).await;
    match &res {
        Ok(v) if v.status == Status::Ok => task.done(),
        _ => drop(task),
    }
    let v = match res {
        Ok(v) => v,
        Err(e @ Error::Usage(_)) => return Err(e),
        Err(e) => Verification {
            backup_id: m.id.clone(),
            job: m.job.clone(),
            at: Utc::now(),
            status: Status::Failed,
            method: RESTORE_TEST.into(),
            tool_version: TOOL_VERSION.into(),
            host: crate::base::host_name(),
            checks: vec![],
            error: Some(one_line(&e)),
            details: serde_json::json!({"seconds": t0.elapsed().as_secs_f64()}),
        },
    };
    catalog.record_verification(m, &v).await?;
    match v.status {
        Status::Ok => {
            tracing::info!(job = %m.job, id = %m.id, seconds = v.details["seconds"].as_f64().unwrap_or(0.0), "restore test passed")
        }
        Status::Failed => {
            tracing::error!(job = %m.job, id = %m.id, error = v.error.as_deref().unwrap_or(""), "restore test failed")
        }
    }
    Ok(v)
}
