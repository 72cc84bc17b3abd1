//! Redis backups against real redis-server processes: our own instances on
//! free loopback ports (special configs), and the shared dev server.
use crate::common;
use crate::redis_support;

use std::io::Write;
use std::path::Path;

use common::{assert_code, catalog_json, cexdr, cexdr_env, stderr};
use redis_support::*;

fn backup(policy: &Path, env: &[(&str, &str)]) -> std::process::Output {
    cexdr_env(
        &["--policy", policy.to_str().unwrap(), "backup", "cache"],
        env,
    )
}

fn only_backup(policy: &Path) -> serde_json::Value {
    let list = catalog_json(policy);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    list[0].clone()
}

/// Fills databases 0, 1 and 5 with every data type.
fn seed_every_type(s: &Server) {
    let mut c = s.conn();
    c.cmds(&["SELECT", "0"]);
    c.cmds(&["SET", "str", "plain"]);
    c.cmds(&["SET", "int", "12345"]);
    c.cmd(&[b"SET", b"bin\x00key\xff\xfe", b"bin\x00value\x01"]);
    c.cmd(&[b"SET", b"big", &vec![b'x'; 300 << 10]]);
    c.cmds(&["SET", "ttl", "expires later", "EX", "86400"]);
    c.cmds(&["HSET", "h:small", "a", "1", "b", "2"]);
    c.cmds(&["RPUSH", "l:small", "x", "y", "z"]);
    c.cmds(&["SADD", "s:ints", "1", "2", "3"]);
    c.cmds(&["SADD", "s:str", "alpha", "beta"]);
    c.cmds(&["ZADD", "z:small", "1.5", "a", "-2", "b"]);
    c.cmds(&["XADD", "stream", "1-1", "f", "v"]);
    c.cmds(&["XADD", "stream", "2-1", "f", "w"]);
    c.cmds(&["XGROUP", "CREATE", "stream", "g", "0"]);
    // Large encodings (hashtable, quicklist, skiplist) too.
    for i in 0..300 {
        let (i, v) = (i.to_string(), format!("value-{i}-{}", "p".repeat(80)));
        c.cmds(&["HSET", "h:big", &i, &v]);
        c.cmds(&["RPUSH", "l:big", &v]);
        c.cmds(&["SADD", "s:big", &v]);
        c.cmds(&["ZADD", "z:big", &i, &v]);
    }
    c.cmds(&["SELECT", "1"]);
    c.cmds(&["SET", "db1:key", "one"]);
    c.cmds(&["HSET", "db1:h", "f", "v"]);
    c.cmds(&["PEXPIRE", "db1:h", "99999999"]);
    c.cmds(&["SELECT", "5"]);
    // Many small keys: the payload spans many chunks.
    c.cmds(&["DEBUG", "POPULATE", "20000", "pop", "50"]);
}

#[test]
fn every_type_round_trips_through_sync_backup_and_restore() {
    let src = Server::start(&[]);
    seed_every_type(&src);
    let before = snapshot(src.port);
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(tmp.path(), &src.url(), "");

    let o = backup(&policy, &[]);
    assert_code(&o, 0);
    let m = only_backup(&policy);
    let id = m["id"].as_str().unwrap().to_owned();
    let d = &m["details"];
    assert_eq!(d["mode"], "standalone");
    assert_eq!(d["transfer"], "sync, length-prefixed");
    assert_eq!(d["rdb_version"], 10);
    assert_eq!(d["redis_version"], "7.0.15");
    assert_eq!(d["crc_checked"], true);
    assert_eq!(d["keyspace"]["db5"]["keys"], 20000);
    assert_eq!(d["keyspace"]["db1"]["keys"], 2);
    assert_eq!(d["keyspace"]["db1"]["expires"], 1);
    assert_eq!(d["replication"]["id"].as_str().unwrap().len(), 40);
    assert_eq!(m["artifacts"][0]["name"], "dump.rdb");

    // Restore to a file and load it into a fresh server: same keys, same values.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("dump.rdb");
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "restore",
        &id,
        "--to",
        file.to_str().unwrap(),
    ]);
    assert_code(&o, 0);
    let check = std::process::Command::new("redis-check-rdb")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // A second restore over it is refused without --force.
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "restore",
        &id,
        "--to",
        file.to_str().unwrap(),
    ]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));

    let restored = Server::start_in(out, free_port(), &[]);
    let after = snapshot(restored.port);
    assert_eq!(before.len(), 3);
    assert_same(&before, &after);

    // Stream verify and the restore drill both pass and are recorded.
    let o = cexdr(&["--policy", policy.to_str().unwrap(), "verify", &id]);
    assert_code(&o, 0);
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "--json",
        "verify",
        &id,
        "--restore-test",
    ]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["method"], "restore-test");
    assert_eq!(v[0]["status"], "ok");
    let checks = v[0]["checks"].to_string();
    assert!(checks.contains("20017 keys in 3 database(s)"), "{checks}");
    assert_eq!(
        only_backup(&policy)["verification"]["method"],
        "restore-test"
    );
}

#[test]
fn eof_marker_form_via_psync_for_an_acl_user() {
    let src = Server::start(&[
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]);
    let mut c = src.conn();
    // This user may PSYNC but not SYNC: cexdr falls back to the EOF form.
    c.cmds(&[
        "ACL", "SETUSER", "backup", "on", ">s3cret", "+@all", "-sync", "~*", "&*",
    ]);
    c.cmds(&["SET", "a", "1"]);
    c.cmds(&["SELECT", "2"]);
    c.cmds(&["DEBUG", "POPULATE", "5000", "k", "200"]);
    let before = snapshot(src.port);
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(
        tmp.path(),
        &src.url(),
        "username = \"backup\"\npassword-env = \"REDIS_PW\"\n",
    );
    let o = backup(&policy, &[("REDIS_PW", "s3cret")]);
    assert_code(&o, 0);
    assert!(!common::stdout(&o).contains("s3cret") && !stderr(&o).contains("s3cret"));
    let m = only_backup(&policy);
    assert!(!m.to_string().contains("s3cret"));
    let d = &m["details"];
    assert_eq!(d["transfer"], "psync, eof-marked", "{d:#}");
    assert_eq!(d["replication"]["from"], "FULLRESYNC");
    assert_eq!(d["keyspace"]["db2"]["keys"], 5000);
    let id = m["id"].as_str().unwrap().to_owned();

    let out = tempfile::tempdir().unwrap();
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "restore",
        &id,
        "--to",
        out.path().join("dump.rdb").to_str().unwrap(),
    ]);
    assert_code(&o, 0);
    let restored = Server::start_in(out, free_port(), &[]);
    assert_same(&before, &snapshot(restored.port));
}

#[test]
fn zero_checksum_is_recorded_not_failed() {
    let src = Server::start(&["--rdbchecksum", "no"]);
    src.conn().cmds(&["SET", "a", "1"]);
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(tmp.path(), &src.url(), "");
    assert_code(&backup(&policy, &[]), 0);
    let m = only_backup(&policy);
    assert_eq!(m["details"]["crc_checked"], false);
    assert!(
        m["warnings"].to_string().contains("rdbchecksum no"),
        "{m:#}"
    );
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "verify",
        m["id"].as_str().unwrap(),
        "--restore-test",
    ]);
    assert_code(&o, 0);
}

#[test]
fn backs_up_the_shared_dev_server() {
    let url = common::redis_url();
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(tmp.path(), &url, "compression = \"zstd\"\n");
    assert_code(&backup(&policy, &[]), 0);
    let m = only_backup(&policy);
    assert_eq!(m["compression"], "zstd");
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "verify",
        m["id"].as_str().unwrap(),
    ]);
    assert_code(&o, 0);
}

/// A failed backup: exit 1, the message, no manifest and no file in the store.
fn assert_fails(policy: &Path, env: &[(&str, &str)], expect: &str) {
    let o = backup(policy, env);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(err.contains(expect), "expected {expect:?} in:\n{err}");
    assert_eq!(catalog_json(policy), serde_json::json!([]));
    assert_eq!(store_files(policy.parent().unwrap()), Vec::<String>::new());
}

#[test]
fn auth_and_permission_faults() {
    let src = Server::start(&[]);
    let mut c = src.conn();
    c.cmds(&[
        "ACL", "SETUSER", "nosync", "on", ">pw", "+@all", "-sync", "-psync", "~*",
    ]);
    c.cmds(&["ACL", "SETUSER", "default", ">rootpw"]);
    let tmp = tempfile::tempdir().unwrap();

    let policy = redis_policy(tmp.path(), &src.url(), "password-env = \"REDIS_PW\"\n");
    assert_fails(
        &policy,
        &[("REDIS_PW", "nope")],
        "authentication failed: wrong username or password",
    );
    let o = backup(&policy, &[("REDIS_PW", "nope")]);
    assert!(!stderr(&o).contains("nope"));

    let policy = redis_policy(tmp.path(), &src.url(), "");
    assert_fails(&policy, &[], "the server requires a password");

    let policy = redis_policy(
        tmp.path(),
        &src.url(),
        "username = \"nosync\"\npassword-env = \"REDIS_PW\"\n",
    );
    assert_fails(
        &policy,
        &[("REDIS_PW", "pw")],
        "lacks the `sync` permission",
    );
}

#[test]
fn a_replica_is_not_a_master() {
    let master = Server::start(&[]);
    let replica = Server::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(tmp.path(), &replica.url(), "");
    assert_fails(
        &policy,
        &[],
        &format!(
            "not a master: this server is a replica of 127.0.0.1:{}",
            master.port
        ),
    );
}

#[test]
fn a_refused_replica_link_fails_clearly() {
    // What a master answers when it cannot serve a replica right now (a
    // chained replica without its master, a failover in progress).
    let port = scripted_server(
        b"-NOMASTERLINK Can't SYNC while not connected with my master\r\n".to_vec(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(tmp.path(), &format!("redis://127.0.0.1:{port}"), "");
    assert_fails(
        &policy,
        &[],
        "refused the replica link: SYNC failed: NOMASTERLINK",
    );

    // min-replicas-to-write refuses writes, not replicas: the backup works.
    let src = Server::start(&["--min-replicas-to-write", "1"]);
    let policy = redis_policy(tmp.path(), &src.url(), "");
    assert_code(&backup(&policy, &[]), 0);
}

fn big_server() -> Server {
    let src = Server::start(&[]);
    src.conn().cmds(&["DEBUG", "POPULATE", "50000", "k", "100"]);
    src
}

#[test]
fn connection_cut_mid_transfer() {
    let src = big_server();
    let tmp = tempfile::tempdir().unwrap();
    for (reset, expect) in [
        (true, "connection lost after"),
        (false, "closed the connection after"),
    ] {
        let port = cutting_proxy(src.port, 1 << 20, reset);
        let policy = redis_policy(tmp.path(), &format!("redis://127.0.0.1:{port}"), "");
        assert_fails(&policy, &[], expect);
    }
}

#[test]
fn bad_payloads_fail_clearly() {
    let src = big_server();
    let rdb = real_rdb(&src);
    let tmp = tempfile::tempdir().unwrap();
    let frame = |body: &[u8], len: usize| {
        let mut v = format!("${len}\r\n").into_bytes();
        v.extend_from_slice(body);
        v
    };
    let mut flipped = rdb.clone();
    flipped[rdb.len() / 2] ^= 0x40;
    let short = &rdb[..rdb.len() - 100];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A byte changed in transit.
        (frame(&flipped, flipped.len()), "RDB checksum mismatch"),
        // The length says 100 bytes more than arrive.
        (frame(short, rdb.len()), "truncated transfer"),
        // A consistent frame around a cut RDB.
        (frame(short, short.len()), "RDB"),
        // Something else entirely.
        (
            frame(b"hello world, not a snapshot", 27),
            "not an RDB snapshot",
        ),
        (b"*1\r\n$2\r\nhi\r\n".to_vec(), "not an RDB transfer"),
    ];
    for (reply, expect) in cases {
        let port = scripted_server(reply);
        let policy = redis_policy(tmp.path(), &format!("redis://127.0.0.1:{port}"), "");
        assert_fails(&policy, &[], expect);
    }
}

#[test]
fn verify_fails_on_a_damaged_artifact() {
    let src = Server::start(&[]);
    src.conn().cmds(&["DEBUG", "POPULATE", "2000", "k", "64"]);
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(tmp.path(), &src.url(), "compression = \"none\"\n");
    let ps = policy.to_str().unwrap();
    assert_code(&backup(&policy, &[]), 0);
    let m = only_backup(&policy);
    let id = m["id"].as_str().unwrap().to_owned();
    let art = tmp.path().join("store").join(m["key"].as_str().unwrap());
    let good = std::fs::read(&art).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 1;

    // Damaged object: the SHA-256 differs.
    std::fs::write(&art, &bad).unwrap();
    let o = cexdr(&["--policy", ps, "verify", &id]);
    assert_code(&o, 4);
    assert!(
        common::stdout(&o).contains("sha256"),
        "{}",
        common::stdout(&o)
    );
    let o = cexdr(&[
        "--policy",
        ps,
        "restore",
        &id,
        "--to",
        tmp.path().join("r.rdb").to_str().unwrap(),
    ]);
    assert_code(&o, 1);
    assert!(!tmp.path().join("r.rdb").exists());
    let o = cexdr(&["--policy", ps, "verify", &id, "--restore-test"]);
    assert_code(&o, 4);

    // Damaged before it was stored (the manifest agrees with the bytes): the RDB's own CRC catches it.
    let mpath = art.parent().unwrap().join("manifest.json");
    let text = std::fs::read_to_string(&mpath).unwrap();
    let sha_bad = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bad))
    };
    std::fs::write(
        &mpath,
        text.replace(m["artifacts"][0]["sha256"].as_str().unwrap(), &sha_bad),
    )
    .unwrap();
    let o = cexdr(&["--policy", ps, "verify", &id]);
    assert_code(&o, 4);
    assert!(
        common::stdout(&o).contains("RDB checksum mismatch"),
        "{}",
        common::stdout(&o)
    );

    // Put the good bytes back (with their manifest): verify passes again.
    std::fs::write(&art, &good).unwrap();
    std::fs::write(&mpath, &text).unwrap();
    assert_code(&cexdr(&["--policy", ps, "verify", &id]), 0);
    let _ = std::io::stdout().flush();
}

/// A CA and a server certificate for 127.0.0.1 (openssl CLI), in `dir`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cexdr test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[test]
fn rediss_tls_backup() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let c = |f: &str| certs.path().join(f).to_str().unwrap().to_owned();
    let tls_port = free_port();
    let src = Server::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &c("server.pem"),
        "--tls-key-file",
        &c("server.key"),
        "--tls-ca-cert-file",
        &c("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    src.conn().cmds(&["DEBUG", "POPULATE", "3000", "k", "100"]);
    let tmp = tempfile::tempdir().unwrap();
    let policy = redis_policy(tmp.path(), &format!("rediss://127.0.0.1:{tls_port}"), "");
    let o = backup(&policy, &[("SSL_CERT_FILE", &c("ca.pem"))]);
    assert_code(&o, 0);
    let m = only_backup(&policy);
    assert_eq!(m["details"]["keyspace"]["db0"]["keys"], 3000);
    assert_eq!(m["details"]["crc_checked"], true);
    let o = cexdr(&[
        "--policy",
        policy.to_str().unwrap(),
        "verify",
        m["id"].as_str().unwrap(),
        "--restore-test",
    ]);
    assert_code(&o, 0);

    // A server certificate the trust store does not know: refused.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path());
    let o = backup(
        &policy,
        &[(
            "SSL_CERT_FILE",
            other.path().join("ca.pem").to_str().unwrap(),
        )],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("TLS handshake failed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(catalog_json(&policy).as_array().unwrap().len(), 1);
}
