//! TLS to MySQL: the `tls = { ca-file, cert-file, key-file, verify }` table
//! every MySQL connection takes (jobs, the archiver, restores, drills, the
//! failover sites), its files read and checked before any connection, and
//! turned into mysql_async's `SslOpts`. It lives in `base` because the
//! backup and the failover flows both connect to MySQL.
use std::path::{Path, PathBuf};

use mysql_async::{ClientIdentity, SslOpts};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The `tls` table. `enabled = false` keeps the table but connects in
/// clear (to switch a site back quickly); absent or `true`, TLS is on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSpec {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The CA the server's certificate must chain to. Without it the
    /// built-in public roots (webpki-roots) are used: a private CA needs it.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key: both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub verify: Verify,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verify {
    /// The certificate chains to the CA and names the host connected to.
    #[default]
    Full,
    /// The certificate chains to the CA; the host name is not checked
    /// (a server reached by an address its certificate does not list).
    Ca,
}

impl Verify {
    pub fn as_str(self) -> &'static str {
        match self {
            Verify::Full => "full",
            Verify::Ca => "ca",
        }
    }
}

/// One certificate's facts, for `policy check` / `runbook check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// `notAfter`, as `YYYY-MM-DD HH:MM:SS UTC`.
    pub not_after: String,
    pub expired: bool,
}

/// What the files of a `tls` table hold: read, parsed and matched.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub verify: Verify,
    pub ca: Vec<Vec<u8>>,
    pub ca_facts: Vec<CertFacts>,
    pub client: Option<(Vec<u8>, Vec<u8>, CertFacts)>,
}

impl Loaded {
    /// Lines for the checks: what was found in each file.
    pub fn describe(&self, spec: &TlsSpec) -> Vec<String> {
        let mut out = vec![format!("tls: on, verify = {:?}", self.verify.as_str())];
        match &spec.ca_file {
            Some(p) => {
                for f in &self.ca_facts {
                    out.push(format!(
                        "tls.ca-file {}: subject {}, issuer {}, expires {}",
                        p.display(),
                        f.subject,
                        f.issuer,
                        f.not_after
                    ));
                }
            }
            None => out.push(
                "tls.ca-file not set: the server certificate is checked against the built-in public roots".into(),
            ),
        }
        if let (Some((_, _, f)), Some(c)) = (&self.client, &spec.cert_file) {
            out.push(format!(
                "tls.cert-file {}: subject {}, issuer {}, expires {}; tls.key-file matches it",
                c.display(),
                f.subject,
                f.issuer,
                f.not_after
            ));
        }
        out
    }

    /// Warnings the checks print (not errors: the setting works).
    pub fn warnings(&self, spec: &TlsSpec) -> Vec<String> {
        let mut w = Vec::new();
        if spec.ca_file.is_none() {
            w.push("tls.ca-file is not set: only a server certificate from a public CA (webpki-roots) is trusted; set ca-file for a private CA".to_string());
        }
        for f in &self.ca_facts {
            if f.expired {
                w.push(format!(
                    "tls.ca-file: the CA {} expired {}",
                    f.subject, f.not_after
                ));
            }
        }
        w
    }

    /// mysql_async's options: the CA alone (no public roots) when a CA file
    /// is given, the client identity, and the host name check per `verify`.
    pub fn ssl_opts(&self) -> SslOpts {
        let mut o = SslOpts::default();
        if !self.ca.is_empty() {
            o = o
                .with_root_certs(self.ca.iter().map(|c| c.clone().into()).collect())
                .with_disable_built_in_roots(true);
        }
        if let Some((cert, key, _)) = &self.client {
            o = o.with_client_identity(Some(ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        o.with_danger_skip_domain_validation(self.verify == Verify::Ca)
    }
}

impl TlsSpec {
    pub fn is_on(&self) -> bool {
        self.enabled != Some(false)
    }

    /// Reads and checks the files; errors (exit 2) name the key and file:
    /// a missing or unreadable file, no certificate in it, a key that does
    /// not match the client certificate, an expired client certificate,
    /// a cert-file without a key-file or the reverse. `None` when off.
    pub fn load(&self, what: &str) -> Result<Option<Loaded>> {
        if !self.is_on() {
            return Ok(None);
        }
        if self.verify == Verify::Ca {
            // mysql_async 0.37 skips the host name check by matching the
            // text "NotValidForName", which rustls 0.23.46 no longer prints
            // (NotValidForNameContext): "ca" would still check the name.
            return Err(Error::Usage(format!(
                "{what}: tls.verify = \"ca\" is not available in this build (the MySQL driver cannot skip the host name check); connect by a name the server's certificate lists and use verify = \"full\""
            )));
        }
        crate::base::http::ensure_crypto_provider();
        let bad = |key: &str, p: &Path, why: String| {
            Error::Usage(format!("{what}: tls.{key} {}: {why}", p.display()))
        };
        let read = |key: &str, p: &Path| {
            std::fs::read(p).map_err(|e| bad(key, p, format!("cannot read: {e}")))
        };
        let certs = |key: &str, p: &Path, data: &[u8]| -> Result<Vec<CertificateDer<'static>>> {
            let v: std::result::Result<Vec<_>, _> = CertificateDer::pem_slice_iter(data).collect();
            match v {
                Ok(v) if !v.is_empty() => Ok(v),
                Ok(_) => Err(bad(key, p, "no PEM certificate in it".into())),
                Err(e) => Err(bad(key, p, format!("not a PEM certificate: {e}"))),
            }
        };
        let mut ca = Vec::new();
        let mut ca_facts = Vec::new();
        if let Some(p) = &self.ca_file {
            let data = read("ca-file", p)?;
            for c in certs("ca-file", p, &data)? {
                ca_facts.push(facts(&c).map_err(|e| bad("ca-file", p, e))?);
            }
            ca = vec![data];
        }
        let client = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(c), None) => {
                return Err(bad(
                    "cert-file",
                    c,
                    "set without tls.key-file: give both or neither".into(),
                ))
            }
            (None, Some(k)) => {
                return Err(bad(
                    "key-file",
                    k,
                    "set without tls.cert-file: give both or neither".into(),
                ))
            }
            (Some(cp), Some(kp)) => {
                let cdata = read("cert-file", cp)?;
                let kdata = read("key-file", kp)?;
                let chain = certs("cert-file", cp, &cdata)?;
                let key = PrivateKeyDer::from_pem_slice(&kdata)
                    .map_err(|e| bad("key-file", kp, format!("not a PEM private key: {e}")))?;
                let signing = rustls::crypto::ring::sign::any_supported_type(&key)
                    .map_err(|e| bad("key-file", kp, format!("unusable key: {e}")))?;
                rustls::sign::CertifiedKey::new(chain.clone(), signing)
                    .keys_match()
                    .map_err(|_| {
                        bad(
                            "key-file",
                            kp,
                            format!(
                                "does not match the certificate in tls.cert-file {}",
                                cp.display()
                            ),
                        )
                    })?;
                let f = facts(&chain[0]).map_err(|e| bad("cert-file", cp, e))?;
                if f.expired {
                    return Err(bad(
                        "cert-file",
                        cp,
                        format!(
                            "the client certificate {} expired {}",
                            f.subject, f.not_after
                        ),
                    ));
                }
                Some((cdata, kdata, f))
            }
        };
        Ok(Some(Loaded {
            verify: self.verify,
            ca,
            ca_facts,
            client,
        }))
    }
}

/// Subject, issuer and expiry of a DER certificate: a small walk of the
/// X.509 structure (no X.509 crate in the build).
fn facts(c: &CertificateDer<'_>) -> std::result::Result<CertFacts, String> {
    let bad = || "not an X.509 certificate".to_string();
    let (cert, _) = der_item(c.as_ref()).ok_or_else(bad)?;
    let (tbs, _) = der_item(cert.1).ok_or_else(bad)?;
    let mut rest = tbs.1;
    let mut next = || -> Option<(u8, &[u8])> {
        let (item, r) = der_item(rest)?;
        rest = r;
        Some(item)
    };
    let mut first = next().ok_or_else(bad)?;
    if first.0 == 0xa0 {
        first = next().ok_or_else(bad)?; // version, then the serial
    }
    let _serial = first;
    let _alg = next().ok_or_else(bad)?;
    let issuer = next().ok_or_else(bad)?;
    let validity = next().ok_or_else(bad)?;
    let subject = next().ok_or_else(bad)?;
    let (_nb, r) = der_item(validity.1).ok_or_else(bad)?;
    let (na, _) = der_item(r).ok_or_else(bad)?;
    let not_after = der_time(na).ok_or_else(bad)?;
    let expired = not_after < chrono::Utc::now();
    Ok(CertFacts {
        subject: der_name(subject.1),
        issuer: der_name(issuer.1),
        not_after: not_after.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        expired,
    })
}

/// A DER item: its tag and contents.
type Der<'a> = (u8, &'a [u8]);

/// One DER item and what follows it.
fn der_item(b: &[u8]) -> Option<(Der<'_>, &[u8])> {
    let tag = *b.first()?;
    let l0 = *b.get(1)? as usize;
    let (len, hdr) = if l0 < 0x80 {
        (l0, 2)
    } else {
        let n = l0 & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let body = b.get(hdr..hdr.checked_add(len)?)?;
    Some(((tag, body), &b[hdr + len..]))
}

fn der_time((tag, v): (u8, &[u8])) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let full = match tag {
        0x17 => {
            // UTCTime: YY < 50 is 20YY (RFC 5280).
            let yy: u32 = s.get(..2)?.parse().ok()?;
            format!("{}{s}", if yy < 50 { "20" } else { "19" })
        }
        0x18 => s.to_string(),
        _ => return None,
    };
    let n = chrono::NaiveDateTime::parse_from_str(full.get(..14)?, "%Y%m%d%H%M%S").ok()?;
    Some(chrono::Utc.from_utc_datetime(&n))
}

/// A Name as `CN=…, O=…` (the attributes an operator recognises).
fn der_name(mut b: &[u8]) -> String {
    let mut parts = Vec::new();
    while let Some(((_, set), r)) = der_item(b) {
        b = r;
        let mut s = set;
        while let Some(((_, atv), r2)) = der_item(s) {
            s = r2;
            let Some(((_, oid), r3)) = der_item(atv) else {
                continue;
            };
            let Some(((_, val), _)) = der_item(r3) else {
                continue;
            };
            let key = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x06] => "C",
                [0x55, 0x04, 0x07] => "L",
                [0x55, 0x04, 0x08] => "ST",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                _ => continue,
            };
            parts.push(format!("{key}={}", String::from_utf8_lossy(val)));
        }
    }
    if parts.is_empty() {
        "(empty)".into()
    } else {
        parts.join(", ")
    }
}

/// A TLS failure in words: an untrusted certificate, a host name the
/// certificate does not list, an expired one. `None` when the error is
/// not a certificate problem.
pub fn explain_tls(e: &(dyn std::error::Error + 'static), server: &str) -> Option<String> {
    use rustls::CertificateError as C;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(r) = x.downcast_ref::<rustls::Error>() {
            return Some(match r {
                rustls::Error::InvalidCertificate(C::UnknownIssuer) => format!(
                    "the certificate of {server} is not trusted: it is not signed by the CA in tls.ca-file (or, without ca-file, by a public root)"
                ),
                rustls::Error::InvalidCertificate(C::NotValidForName)
                | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => format!(
                    "the certificate of {server} does not name that host (verify = \"full\" checks the host name; use the name in its certificate, or verify = \"ca\")"
                ),
                rustls::Error::InvalidCertificate(C::Expired)
                | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
                    format!("the certificate of {server} has expired")
                }
                rustls::Error::InvalidCertificate(C::NotValidYet)
                | rustls::Error::InvalidCertificate(C::NotValidYetContext { .. }) => {
                    format!("the certificate of {server} is not valid yet (check the clocks)")
                }
                other => format!("TLS with {server} failed: {other}"),
            });
        }
        if let Some(io) = x.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        cur = x.source();
    }
    None
}
