//! Helpers for the Redis tests: private redis-server instances on free
//! loopback ports (killed on drop), a tiny RESP client, a proxy that cuts
//! a transfer, and a scripted server for replies a real one never sends.
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of our own; killed (and its directory removed) on drop.
pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Self::start_in(tempfile::tempdir().unwrap(), free_port(), extra)
    }

    /// Starts over an existing directory (holding a dump.rdb to load).
    pub fn start_in(dir: tempfile::TempDir, port: u16, extra: &[&str]) -> Server {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(["--logfile", "redis.log"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let s = Server { port, dir, child };
        let t0 = Instant::now();
        loop {
            if let Ok(mut c) = Resp::connect(port) {
                if let Ok(Reply::Bulk(Some(info))) = c.try_cmd(&[b"INFO", b"persistence"]) {
                    if String::from_utf8_lossy(&info).contains("loading:0") {
                        break;
                    }
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "redis-server on {port} did not start: {}",
                s.log()
            );
            thread::sleep(Duration::from_millis(30));
        }
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    pub fn conn(&self) -> Resp {
        Resp::connect(self.port).unwrap()
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
    pub fn cli(&self, args: &[&str]) -> String {
        let o = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// A minimal synchronous RESP client (binary-safe, unlike redis-cli args).
pub struct Resp {
    r: BufReader<TcpStream>,
}

impl Resp {
    pub fn connect(port: u16) -> std::io::Result<Resp> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Resp {
            r: BufReader::new(s),
        })
    }

    pub fn try_cmd(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.r.get_mut().write_all(&buf)?;
        self.read()
    }

    /// Runs a command; panics on an error reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        match self.try_cmd(args).unwrap() {
            Reply::Error(e) => panic!("{:?}: {e}", String::from_utf8_lossy(args[0])),
            r => r,
        }
    }

    pub fn cmds(&mut self, args: &[&str]) -> Reply {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.cmd(&a)
    }

    fn read(&mut self) -> std::io::Result<Reply> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line)?;
        if line.len() < 3 {
            return Err(std::io::Error::other("connection closed"));
        }
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        Ok(match line[0] {
            b'+' => Reply::Status(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Int(text.parse().unwrap()),
            b'$' => {
                let n: i64 = text.parse().unwrap();
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut b = vec![0; n as usize + 2];
                    self.r.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            }
            b'*' => {
                let n: i64 = text.parse().unwrap();
                let mut v = Vec::new();
                for _ in 0..n.max(0) {
                    v.push(self.read()?);
                }
                Reply::Array(v)
            }
            _ => return Err(std::io::Error::other(format!("bad reply {text}"))),
        })
    }
}

/// Every key of the selected database, sorted.
pub fn keys(c: &mut Resp) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cursor = b"0".to_vec();
    loop {
        let Reply::Array(v) = c.cmd(&[b"SCAN", &cursor, b"COUNT", b"1000"]) else {
            panic!("SCAN")
        };
        let Reply::Bulk(Some(next)) = &v[0] else {
            panic!()
        };
        let Reply::Array(ks) = &v[1] else { panic!() };
        for k in ks {
            if let Reply::Bulk(Some(k)) = k {
                out.push(k.clone());
            }
        }
        if next == b"0" {
            break;
        }
        cursor = next.clone();
    }
    out.sort();
    out
}

/// Asserts two snapshots are equal, naming the first difference.
pub fn assert_same(a: &Snapshot, b: &Snapshot) {
    let dbs = |s: &Snapshot| s.iter().map(|(d, e)| (*d, e.len())).collect::<Vec<_>>();
    assert_eq!(dbs(a), dbs(b), "databases and key counts differ");
    for ((db, ea), (_, eb)) in a.iter().zip(b) {
        for (x, y) in ea.iter().zip(eb) {
            assert!(
                x == y,
                "db{db}: key {:?} differs (dump {} vs {} bytes, ttl {} vs {})",
                String::from_utf8_lossy(&x.0),
                x.1.len(),
                y.1.len(),
                x.2,
                y.2
            );
        }
    }
}

pub type Snapshot = Vec<(u32, Vec<(Vec<u8>, Vec<u8>, bool)>)>;

/// A key's type and value in a canonical form: hashes and sets sorted
/// (their DUMP order depends on the hash table), everything else as read.
fn value(c: &mut Resp, k: &[u8]) -> Vec<u8> {
    let Reply::Status(t) = c.cmd(&[b"TYPE", k]) else {
        panic!("TYPE")
    };
    let flat = |r: Reply| -> Vec<Vec<u8>> {
        let Reply::Array(v) = r else {
            panic!("not an array")
        };
        v.into_iter()
            .map(|x| match x {
                Reply::Bulk(Some(b)) => b,
                other => format!("{other:?}").into_bytes(),
            })
            .collect()
    };
    let parts: Vec<Vec<u8>> = match t.as_str() {
        "hash" => {
            let v = flat(c.cmd(&[b"HGETALL", k]));
            let mut pairs: Vec<Vec<u8>> = v.chunks(2).map(|p| p.concat()).collect();
            pairs.sort();
            pairs
        }
        "set" => {
            let mut v = flat(c.cmd(&[b"SMEMBERS", k]));
            v.sort();
            v
        }
        "zset" => flat(c.cmd(&[b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"])),
        "list" => flat(c.cmd(&[b"LRANGE", k, b"0", b"-1"])),
        // Strings and streams (entries, ids and consumer groups) dump canonically.
        _ => {
            let Reply::Bulk(Some(d)) = c.cmd(&[b"DUMP", k]) else {
                panic!("DUMP")
            };
            vec![d]
        }
    };
    let mut out = t.into_bytes();
    for p in parts {
        out.extend_from_slice(format!("|{}:", p.len()).as_bytes());
        out.extend_from_slice(&p);
    }
    out
}

/// `db -> [(key, type and value, has TTL)]` for databases 0..16.
pub fn snapshot(port: u16) -> Snapshot {
    let mut c = Resp::connect(port).unwrap();
    let mut out = Vec::new();
    for db in 0..16u32 {
        c.cmds(&["SELECT", &db.to_string()]);
        let mut entries = Vec::new();
        for k in keys(&mut c) {
            let dump = value(&mut c, &k);
            let Reply::Int(ttl) = c.cmd(&[b"PTTL", &k]) else {
                panic!()
            };
            entries.push((k, dump, ttl > 0));
        }
        if !entries.is_empty() {
            out.push((db, entries));
        }
    }
    out
}

/// A loopback proxy to `port` that forwards the first `limit` bytes of the
/// server's reply, then cuts the connection (RST if `reset`, else FIN).
pub fn cutting_proxy(port: u16, limit: usize, reset: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let upstream = thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            let (mut client, mut server) = (client, server);
            let mut sent = 0;
            let mut buf = vec![0; 16 << 10];
            while sent < limit {
                let n = match server.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n.min(limit - sent),
                };
                if client.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n;
            }
            if reset {
                linger_zero(&client);
                // Wake the upstream copier so every handle closes, then the
                // last close sends the RST.
                let _ = client.shutdown(Shutdown::Read);
            } else {
                let _ = client.shutdown(Shutdown::Both);
            }
            let _ = upstream.join();
            drop(client);
            let _ = server.shutdown(Shutdown::Both);
        }
    });
    p
}

/// SO_LINGER 0: closing the socket sends a RST instead of a FIN.
fn linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &lg as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

/// A scripted server: answers AUTH/REPLCONF/INFO like a master, then
/// answers SYNC/PSYNC with `reply` verbatim and closes.
pub fn scripted_server(reply: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let reply = reply.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                loop {
                    let Some(args) = read_command(&mut r) else {
                        return;
                    };
                    let name = String::from_utf8_lossy(&args[0]).to_uppercase();
                    let out: Vec<u8> = match name.as_str() {
                        "INFO" => {
                            let info = "# Server\r\nredis_version:7.0.15\r\n# Replication\r\nrole:master\r\nmaster_replid:0000000000000000000000000000000000000000\r\nmaster_repl_offset:0\r\n# Cluster\r\ncluster_enabled:0\r\n# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n";
                            format!("${}\r\n{info}\r\n", info.len()).into_bytes()
                        }
                        "SYNC" | "PSYNC" => {
                            let _ = w.write_all(b"\n\n");
                            let _ = w.write_all(&reply);
                            let _ = w.shutdown(Shutdown::Both);
                            return;
                        }
                        _ => b"+OK\r\n".to_vec(),
                    };
                    if w.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    p
}

fn read_command(r: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let n: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::new();
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut b = vec![0; len + 2];
        r.read_exact(&mut b).ok()?;
        b.truncate(len);
        args.push(b);
    }
    Some(args)
}

/// The RDB a real server produces for its current data (via redis-cli --rdb).
pub fn real_rdb(s: &Server) -> Vec<u8> {
    let f = s.dir.path().join("fetched.rdb");
    let o = Command::new("redis-cli")
        .args(["-p", &s.port.to_string(), "--rdb"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "redis-cli --rdb: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(&f).unwrap()
}

/// A policy with one redis job `cache` and a local store under `dir`.
pub fn redis_policy(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let store = dir.join("store");
    let text = format!(
        "[store]\nkind = \"local\"\npath = \"{}\"\n\n[[job]]\nname = \"cache\"\nkind = \"redis\"\nurl = \"{url}\"\nschedule = \"30 2 * * *\"\n{extra}",
        store.display()
    );
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Regular files under the store (artifacts, manifests), relative paths.
pub fn store_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("store")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}
