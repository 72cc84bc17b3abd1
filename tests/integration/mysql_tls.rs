//! TLS to MySQL against a private mariadbd started with --ssl-ca/--ssl-cert/
//! --ssl-key and --require-secure-transport=ON, with a CA this test makes
//! (the openssl CLI): a backup over TLS passes; a wrong CA, a host name the
//! certificate does not list, a plaintext attempt, an expired server
//! certificate and bad client files fail with messages naming the cause.
use crate::common::*;
use crate::mariadb_server::{MariaDb, Options};

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA `NAME.pem`/`NAME.key` (self-signed).
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A certificate `NAME.pem`/`NAME.key` signed by CA `ca`, with the SAN
/// given; `expired`: valid only in January 2020.
fn make_cert(dir: &Path, ca: &str, name: &str, san: &str, expired: bool) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\n"),
    )
    .unwrap();
    if expired {
        // `openssl ca` is the CLI that takes dates in the past.
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n",
        )
        .unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "01\n").unwrap();
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-notext",
                "-in",
                &format!("{name}.csr"),
                "-cert",
                &format!("{ca}.pem"),
                "-keyfile",
                &format!("{ca}.key"),
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
            ],
        );
    } else {
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
                "-days",
                "2",
            ],
        );
    }
}

struct Tls {
    dir: tempfile::TempDir,
    server: MariaDb,
}

/// A private server whose certificate (signed by `ca`) lists only
/// IP:127.0.0.1, so `localhost` is a host name it does not list.
fn tls_server(expired: bool) -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_ca(d, "other-ca");
    make_cert(d, "ca", "server", "IP:127.0.0.1", expired);
    make_cert(d, "ca", "client", "DNS:cexdr-client", false);
    let server = MariaDb::start(Options {
        binlog: true,
        extra: vec![
            format!("--ssl-ca={}", d.join("ca.pem").display()),
            format!("--ssl-cert={}", d.join("server.pem").display()),
            format!("--ssl-key={}", d.join("server.key").display()),
            "--require-secure-transport=ON".into(),
        ],
        ..Options::default()
    });
    Tls { dir, server }
}

impl Tls {
    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    fn policy(&self, url: &str, tls: &str) -> std::path::PathBuf {
        let d = self.dir.path();
        write_policy(
            d,
            &format!(
                "{}\n[[job]]\nname = \"db\"\nkind = \"mysql\"\nurl = \"{url}\"\ndatabases = [\"ledger\"]\n{tls}\n",
                local_store(&d.join("store"))
            ),
        )
    }
}

#[test]
fn a_backup_over_tls_passes_and_bad_tls_settings_fail_by_name() {
    let t = tls_server(false);
    t.server.sql(
        "CREATE DATABASE ledger; CREATE TABLE ledger.t (id INT PRIMARY KEY, v VARCHAR(40));
         INSERT INTO ledger.t SELECT seq, MD5(seq) FROM ledger.seq_1_to_500;",
    );
    let url = t.server.url();
    // 1. The CA and a client certificate: the backup passes, and the
    //    server saw an encrypted session.
    let good = format!(
        "tls = {{ ca-file = \"{}\", cert-file = \"{}\", key-file = \"{}\" }}",
        t.path("ca.pem"),
        t.path("client.pem"),
        t.path("client.key")
    );
    let pol = t.policy(&url, &good);
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "policy", "check"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("subject CN=ca, issuer CN=ca")
            && out.contains("subject CN=client, issuer CN=ca")
            && out.contains("tls.key-file matches it"),
        "{out}"
    );
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
    assert_code(&o, 0);
    let list = catalog_json(&pol);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");

    // 2. A plaintext attempt: the server refuses (MariaDB says "access
    //    denied"), the message says what to add.
    let pol = t.policy(&url, "");
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("requires TLS (require_secure_transport = ON)")
            && stderr(&o).contains("add tls = {"),
        "{}",
        stderr(&o)
    );

    // 3. A CA that did not sign the server's certificate.
    let pol = t.policy(
        &url,
        &format!("tls = {{ ca-file = \"{}\" }}", t.path("other-ca.pem")),
    );
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
    assert_code(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("is not trusted") && e.contains(&format!("127.0.0.1:{}", t.server.port())),
        "{e}"
    );

    // 4. A host name the certificate does not list: refused with "full".
    let local = url.replace("127.0.0.1", "localhost");
    let pol = t.policy(
        &local,
        &format!("tls = {{ ca-file = \"{}\" }}", t.path("ca.pem")),
    );
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("does not name that host"),
        "{}",
        stderr(&o)
    );
    let pol = t.policy(
        &local,
        &format!(
            "tls = {{ ca-file = \"{}\", verify = \"ca\" }}",
            t.path("ca.pem")
        ),
    );
    // "ca" is refused by name (see base::mysql_tls: the driver cannot skip
    // the name check with this rustls), never silently "full" or "none".
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("tls.verify = \"ca\" is not available"),
        "{}",
        stderr(&o)
    );

    // 5. Bad files: exit 2, naming the key and the file.
    let missing = t.path("nope.pem");
    let pol = t.policy(&url, &format!("tls = {{ ca-file = \"{missing}\" }}"));
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains(&format!("tls.ca-file {missing}: cannot read")),
        "{}",
        stderr(&o)
    );
    let pol = t.policy(
        &url,
        &format!(
            "tls = {{ ca-file = \"{}\", cert-file = \"{}\", key-file = \"{}\" }}",
            t.path("ca.pem"),
            t.path("client.pem"),
            t.path("server.key")
        ),
    );
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
    assert_code(&o, 2);
    assert_code(
        &cexdr(&["--policy", pol.to_str().unwrap(), "policy", "check"]),
        2,
    );
    assert!(
        stderr(&o).contains("tls.key-file")
            && stderr(&o).contains("does not match the certificate"),
        "{}",
        stderr(&o)
    );
    let pol = t.policy(
        &url,
        &format!("tls = {{ cert-file = \"{}\" }}", t.path("client.pem")),
    );
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("without tls.key-file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_expired_server_certificate_is_named() {
    let t = tls_server(true);
    let pol = t.policy(
        &t.server.url(),
        &format!("tls = {{ ca-file = \"{}\" }}", t.path("ca.pem")),
    );
    let o = cexdr(&["--policy", pol.to_str().unwrap(), "backup", "db"]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("has expired"), "{}", stderr(&o));
}
