//! Connecting: URL forms, passwords, session settings, and error messages
//! an operator can act on.
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use crate::base::mysql_tls::{explain_tls, TlsSpec};
use crate::base::Secret;
use crate::error::{Error, Result};

/// Where a server is: `mysql://user@host[:port]` or, for a unix socket,
/// `mysql://user@localhost/?socket=/run/mysqld/mysqld.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub socket: Option<String>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let bad = |why: &str| Error::Usage(format!("mysql URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("mysql://")
            .ok_or_else(|| bad("must start with mysql://"))?;
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (u, h),
            None => ("root", authority),
        };
        if user.contains(':') {
            return Err(bad(
                "must not contain a password; use password-env or password-file",
            ));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().map_err(|_| bad("bad port"))?,
            ),
            _ => (hostport, 3306),
        };
        let mut socket = None;
        let query = tail.trim_start_matches('/');
        if let Some(q) = query.strip_prefix('?') {
            for kv in q.split('&').filter(|s| !s.is_empty()) {
                match kv.split_once('=') {
                    Some(("socket", v)) if !v.is_empty() => socket = Some(v.to_owned()),
                    _ => return Err(bad(&format!("unknown parameter {kv:?} (only socket=PATH)"))),
                }
            }
        } else if !query.is_empty() {
            return Err(bad(
                "a database in the URL is not supported; use `databases`",
            ));
        }
        if host.is_empty() && socket.is_none() {
            return Err(bad("no host"));
        }
        Ok(Target {
            user: user.to_owned(),
            host: if host.is_empty() {
                "localhost".into()
            } else {
                host.to_owned()
            },
            port,
            socket,
        })
    }

    /// For messages: never includes a password (there is none in it).
    pub fn describe(&self) -> String {
        match &self.socket {
            Some(s) => format!("mysql://{}@{} (socket {s})", self.user, self.host),
            None => format!("mysql://{}@{}:{}", self.user, self.host, self.port),
        }
    }
}

/// Connection settings for one server.
#[derive(Clone)]
pub struct Server {
    pub target: Target,
    password: Option<String>,
    /// TLS settings with their files already read (None: plaintext).
    ssl: Option<mysql_async::SslOpts>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.target.describe())
    }
}

impl Server {
    pub fn new(url: &str, password: &Secret, tls: Option<&TlsSpec>) -> Result<Server> {
        let target = Target::parse(url)?;
        let ssl = match tls {
            Some(t) => t.load(&target.describe())?.map(|l| l.ssl_opts()),
            None => None,
        };
        if ssl.is_some() && target.socket.is_some() {
            // mysql_async does not wrap a unix socket in TLS: refuse rather
            // than let a tls table look as if it did something.
            return Err(Error::Usage(format!(
                "{}: a tls table with a unix socket: the socket is local and never encrypted; remove one of them",
                target.describe()
            )));
        }
        Ok(Server {
            target,
            password: password.read()?,
            ssl,
        })
    }

    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// Whether connections are made over TLS.
    pub fn tls(&self) -> bool {
        self.ssl.is_some()
    }

    /// Connects with the session every cexdr connection uses: utf8mb4,
    /// UTC, a plain SQL mode, and timeouts long enough for a worker that
    /// waits on a slow store.
    pub async fn connect(&self) -> Result<Conn> {
        let t = &self.target;
        let mut b = OptsBuilder::default()
            .user(Some(t.user.clone()))
            .pass(self.password.clone())
            .tcp_nodelay(true)
            .prefer_socket(false)
            .init(vec![
                "SET NAMES utf8mb4",
                "SET time_zone = '+00:00'",
                "SET sql_mode = 'NO_AUTO_VALUE_ON_ZERO'",
                "SET SESSION net_write_timeout = 3600, net_read_timeout = 3600, wait_timeout = 86400",
            ]);
        b = match &t.socket {
            Some(s) => b.socket(Some(s.clone())).ip_or_hostname("localhost"),
            None => b.ip_or_hostname(t.host.clone()).tcp_port(t.port),
        };
        b = b.ssl_opts(self.ssl.clone());
        let what = self.describe();
        match tokio::time::timeout(Duration::from_secs(15), Conn::new(b)).await {
            Err(_) => Err(Error::source_err(
                what,
                "no answer within 15 s (server down, firewalled or unreachable?)",
            )),
            Ok(Err(e)) => match explain_tls(&e, &what) {
                Some(msg) => Err(Error::source_err(what, msg)),
                // MariaDB with require_secure_transport refuses a plaintext
                // login as "access denied" (10.11, seen in mysql_tls tests).
                None if self.ssl.is_none() && is_access_denied(&e) => Err(Error::source_err(
                    what,
                    format!(
                        "{}; if the server requires TLS (require_secure_transport = ON) it refuses a plaintext login this way: add tls = {{ ca-file = \"…\" }}",
                        explain(&e)
                    ),
                )),
                None => Err(Error::source_from(what, MysqlError(e))),
            },
            Ok(Ok(c)) => Ok(c),
        }
    }
}

fn is_access_denied(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1045)
}

/// A server or network error in words an operator can act on; names the
/// missing privilege when the server says which one.
pub fn explain(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            1045 => format!("access denied: wrong user or password ({})", s.message),
            1044 | 1142 | 1143 | 1227 | 1370 => {
                format!("missing privilege: {} (error {})", s.message, s.code)
            }
            1049 => format!("unknown database: {}", s.message),
            1146 => format!("{} (was the table dropped during the dump?)", s.message),
            1412 => format!(
                "{} (a table was altered or dropped during the dump; run the backup again)",
                s.message
            ),
            // MariaDB 4036 / MySQL 3159: require_secure_transport is on.
            3159 | 4036 => format!(
                "the server requires TLS: add tls = {{ ca-file = \"…\" }} to this connection's settings ({})",
                s.message
            ),
            _ if s.message.contains("insecure transport") => format!(
                "the server requires TLS: add tls = {{ ca-file = \"…\" }} to this connection's settings ({})",
                s.message
            ),
            1927 | 1317 => format!("connection killed by the server: {}", s.message),
            _ => format!("server error {}: {}", s.code, s.message),
        },
        mysql_async::Error::Io(io) => format!("connection lost or refused: {io}"),
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            "the server does not offer TLS (have_ssl is off there) but this connection has a tls table: enable TLS on the server (--ssl-cert/--ssl-key) or set tls.enabled = false".into()
        }
        mysql_async::Error::Driver(d) => format!("connection failed: {d}"),
        other => other.to_string(),
    }
}

/// A server or network error kept as it is (`.0`), shown in the words of
/// [`explain`]: the cause of a restore error. It reports no further source:
/// `explain` already words the driver error's whole chain, and the raw
/// server text would only repeat it.
#[derive(Debug)]
pub struct MysqlError(pub mysql_async::Error);

impl std::fmt::Display for MysqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&explain(&self.0))
    }
}

impl std::error::Error for MysqlError {}

/// Runs a statement; errors name what was being done.
pub async fn exec(conn: &mut Conn, what: &str, sql: &str) -> Result<()> {
    conn.query_drop(sql)
        .await
        .map_err(|e| Error::source_from(what, MysqlError(e)))
}

/// All rows of a small catalog query as strings (NULL → None).
pub async fn rows(conn: &mut Conn, what: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    let rows: Vec<mysql_async::Row> = conn
        .query(sql)
        .await
        .map_err(|e| Error::source_from(what, MysqlError(e)))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            r.unwrap_raw()
                .into_iter()
                .map(|v| match v {
                    None | Some(mysql_async::Value::NULL) => None,
                    Some(mysql_async::Value::Bytes(b)) => {
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                    Some(v) => Some(v.as_sql(true).trim_matches('\'').to_owned()),
                })
                .collect()
        })
        .collect())
}

/// All rows of a query as raw bytes (NULL → None): definitions read with
/// `character_set_results = binary` keep their own character set.
pub async fn raw_rows(conn: &mut Conn, what: &str, sql: &str) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
    let rows: Vec<mysql_async::Row> = conn
        .query(sql)
        .await
        .map_err(|e| Error::source_from(what, MysqlError(e)))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            r.unwrap_raw()
                .into_iter()
                .map(|v| match v {
                    None | Some(mysql_async::Value::NULL) => None,
                    Some(mysql_async::Value::Bytes(b)) => Some(b),
                    Some(v) => Some(v.as_sql(true).trim_matches('\'').as_bytes().to_vec()),
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(
            Target::parse("mysql://backup@db1:3307").unwrap(),
            Target {
                user: "backup".into(),
                host: "db1".into(),
                port: 3307,
                socket: None
            }
        );
        assert_eq!(Target::parse("mysql://root@127.0.0.1").unwrap().port, 3306);
        let s = Target::parse("mysql://root@localhost/?socket=/run/mysqld/mysqld.sock").unwrap();
        assert_eq!(s.socket.as_deref(), Some("/run/mysqld/mysqld.sock"));
        assert!(Target::parse("mysql://root:pw@db").is_err());
        assert!(Target::parse("mysql://root@db/ledger").is_err());
        assert!(Target::parse("mysql://root@db/?ssl=1").is_err());
        assert!(Target::parse("postgres://x@db").is_err());
    }
}
