//! A minimal RESP2 client over a raw TCP (or TLS) connection: enough for
//! AUTH, INFO, CLUSTER NODES and the replication handshake, which the
//! `redis` crate cannot speak (it cannot read a SYNC payload).
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No byte at all for this long (Redis sends a keepalive newline every
/// second while it prepares a snapshot) means the link is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const LINE_MAX: usize = 64 << 10;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Where to connect: parsed from `redis://[user@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Addr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub user: Option<String>,
}

/// Why a redis URL was not understood; each names the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("{0:?} is not a redis:// URL")]
    NotAUrl(String),
    #[error("{0:?} must start with redis:// or rediss://")]
    Scheme(String),
    #[error("{0:?}: unclosed [ in the host")]
    UnclosedBracket(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{url:?}: port {port:?} is not a number")]
    Port { url: String, port: String },
}

impl Addr {
    pub fn parse(url: &str) -> std::result::Result<Addr, AddrError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| AddrError::NotAUrl(url.to_owned()))?;
        let tls = match scheme {
            "redis" => false,
            "rediss" => true,
            _ => return Err(AddrError::Scheme(url.to_owned())),
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()).filter(|u| !u.is_empty()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| AddrError::UnclosedBracket(url.to_owned()))?;
            (h.to_owned(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(AddrError::NoHost(url.to_owned()));
        }
        let port = match port {
            None | Some("") => 6379,
            Some(p) => p.parse().map_err(|_| AddrError::Port {
                url: url.to_owned(),
                port: p.to_owned(),
            })?,
        };
        Ok(Addr {
            host,
            port,
            tls,
            user,
        })
    }

    pub fn with_host_port(&self, host: &str, port: u16) -> Addr {
        Addr {
            host: host.to_owned(),
            port,
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => "(nil)".into(),
            Reply::Array(Some(v)) => v.iter().map(Reply::text).collect::<Vec<_>>().join(" "),
        }
    }
}

pub struct Conn {
    pub io: BufReader<Box<dyn Io>>,
    pub addr: Addr,
}

impl Conn {
    pub fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::source_err(format!("redis {}", self.addr), msg)
    }

    /// `context: cause`, the cause kept as the source.
    pub fn err_with(&self, context: &str, cause: std::io::Error) -> Error {
        Error::source_with(format!("redis {}", self.addr), context, cause)
    }

    pub async fn connect(addr: &Addr, tls: Option<&super::tls::Tls>) -> Result<Conn> {
        let what = format!("redis {addr}");
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((addr.host.as_str(), addr.port)),
        )
        .await
        .map_err(|_| Error::source_err(&what, format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| Error::source_with(&what, "cannot connect", e))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match (addr.tls, tls) {
            (true, Some(t)) => Box::new(
                t.connect(&addr.host, tcp)
                    .await
                    .map_err(|e| Error::source_with(&what, "TLS handshake failed", e))?,
            ),
            (true, None) => return Err(Error::source_err(&what, "rediss:// needs a TLS context")),
            (false, _) => Box::new(tcp),
        };
        Ok(Conn {
            io: BufReader::with_capacity(64 << 10, io),
            addr: addr.clone(),
        })
    }

    /// Sends commands (pipelined in one write).
    pub async fn send(&mut self, cmds: &[&[&[u8]]]) -> Result<()> {
        let mut buf = Vec::new();
        for args in cmds {
            buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in *args {
                buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                buf.extend_from_slice(a);
                buf.extend_from_slice(b"\r\n");
            }
        }
        let what = format!("redis {}", self.addr);
        let w = self.io.get_mut();
        let res = match w.write_all(&buf).await {
            Ok(()) => w.flush().await,
            Err(e) => Err(e),
        };
        res.map_err(|e| Error::source_with(what, "write", e))
    }

    pub async fn cmd(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(&[args]).await?;
        self.read_reply().await
    }

    /// A command whose error reply is a failure of the backup.
    pub async fn ok(&mut self, args: &[&[u8]]) -> Result<Reply> {
        match self.cmd(args).await? {
            Reply::Error(e) => Err(self.err(describe_error(args[0], &e))),
            r => Ok(r),
        }
    }

    pub async fn read_byte(&mut self) -> Result<u8> {
        match tokio::time::timeout(IDLE_TIMEOUT, self.io.read_u8()).await {
            Err(_) => Err(self.err(format!("no reply for {IDLE_TIMEOUT:?}"))),
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.err("the server closed the connection"))
            }
            Ok(Err(e)) => Err(self.err_with("read", e)),
        }
    }

    /// One line without its CRLF.
    pub async fn read_line(&mut self) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        let mut limited = (&mut self.io).take(LINE_MAX as u64);
        let res = tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line)).await;
        let n = match res {
            Err(_) => return Err(self.err(format!("no reply for {IDLE_TIMEOUT:?}"))),
            Ok(r) => r.map_err(|e| self.err_with("read", e))?,
        };
        if n == 0 || !line.ends_with(b"\n") {
            if n >= LINE_MAX {
                return Err(self.err("protocol error: reply line too long"));
            }
            return Err(self.err("the server closed the connection"));
        }
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
        Ok(line)
    }

    pub async fn read_reply(&mut self) -> Result<Reply> {
        let t = self.read_byte().await?;
        self.read_reply_after(t).await
    }

    /// A reply whose type byte was already read.
    pub async fn read_reply_after(&mut self, t: u8) -> Result<Reply> {
        let line = self.read_line().await?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let num = |s: &str| -> Result<i64> {
            s.parse()
                .map_err(|_| self.err(format!("protocol error: bad length {s:?}")))
        };
        Ok(match t {
            b'+' => Reply::Status(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Int(num(&text)?),
            b'$' => {
                let n = num(&text)?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    if n > 512 << 20 {
                        return Err(self.err("protocol error: reply too large"));
                    }
                    let mut b = vec![0; n as usize + 2];
                    tokio::time::timeout(IDLE_TIMEOUT, self.io.read_exact(&mut b))
                        .await
                        .map_err(|_| self.err("reply timed out"))?
                        .map_err(|e| self.err_with("read", e))?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            }
            b'*' => {
                let n = num(&text)?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut v = Vec::with_capacity(n.min(1024) as usize);
                    for _ in 0..n {
                        v.push(Box::pin(self.read_reply()).await?);
                    }
                    Reply::Array(Some(v))
                }
            }
            other => {
                return Err(self.err(format!(
                    "protocol error: unexpected reply {:?}",
                    String::from_utf8_lossy(&[&[other][..], &line].concat())
                )))
            }
        })
    }

    /// `INFO [section]` as `key -> value` pairs.
    pub async fn info(&mut self, section: &str) -> Result<Info> {
        let r = self.ok(&[b"INFO", section.as_bytes()]).await?;
        Ok(Info::parse(&r.text()))
    }
}

/// Explains an error reply in words an operator can act on.
pub fn describe_error(cmd: &[u8], e: &str) -> String {
    let cmd = String::from_utf8_lossy(cmd).to_uppercase();
    if e.starts_with("NOPERM") {
        let perm = e
            .split('\'')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| cmd.to_lowercase());
        return format!(
            "{cmd} refused: the ACL user lacks the `{perm}` permission ({e}); cexdr needs +auth +info +replconf +sync (or +psync) and, for clusters, +cluster|nodes"
        );
    }
    if e.starts_with("WRONGPASS") || e.contains("invalid password") {
        return format!("authentication failed: wrong username or password ({e})");
    }
    if e.starts_with("NOAUTH") {
        return format!("the server requires a password: set password-env or password-file ({e})");
    }
    format!("{cmd} failed: {e}")
}

/// Parsed `INFO` text.
#[derive(Debug, Default, Clone)]
pub struct Info(pub Vec<(String, String)>);

impl Info {
    pub fn parse(text: &str) -> Info {
        Info(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    /// `db0:keys=3,expires=1,avg_ttl=0` lines as `{"db0": {"keys": 3, "expires": 1}}`.
    pub fn keyspace(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (k, v) in &self.0 {
            if !(k.starts_with("db") && k[2..].chars().all(|c| c.is_ascii_digit())) {
                continue;
            }
            let field = |name: &str| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(a, _)| *a == name)
                    .and_then(|(_, b)| b.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            out.insert(
                k.clone(),
                serde_json::json!({"keys": field("keys"), "expires": field("expires")}),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = Addr::parse("redis://10.0.0.5:7000").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls, a.user),
            ("10.0.0.5", 7000, false, None)
        );
        let a = Addr::parse("rediss://backup@cache.internal/0").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls, a.user.as_deref()),
            ("cache.internal", 6379, true, Some("backup"))
        );
        let a = Addr::parse("redis://[::1]:6380").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 6380));
        assert_eq!(a.to_string(), "[::1]:6380");
        assert!(Addr::parse("redis://:6379").is_err());
        assert!(Addr::parse("redis://h:x").is_err());
    }

    #[test]
    fn keyspace_and_errors() {
        let i = Info::parse(
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=5\r\ndb12:keys=7,expires=0,avg_ttl=0\r\n",
        );
        assert_eq!(
            serde_json::Value::Object(i.keyspace()),
            serde_json::json!({"db0": {"keys": 3, "expires": 1}, "db12": {"keys": 7, "expires": 0}})
        );
        let m = describe_error(
            b"sync",
            "NOPERM this user has no permissions to run the 'sync' command",
        );
        assert!(m.contains("`sync` permission"), "{m}");
        assert!(
            describe_error(b"auth", "WRONGPASS invalid username-password pair")
                .contains("wrong username or password")
        );
    }
}
