//! Streaming RDB checks: the `REDIS` magic and version, the auxiliary
//! header fields (redis version, replication id/offset at the fork), and
//! the trailing CRC-64 (Jones, as Redis computes it) over everything before
//! it. Memory stays a few KiB whatever the size of the snapshot.
use crc::{Crc, Digest, Table, CRC_64_REDIS};
use serde_json::{json, Map, Value};

static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// Header bytes kept for parsing the aux fields; they are a few hundred bytes.
const HEAD_MAX: usize = 16 << 10;
const OP_EOF: u8 = 0xFF;
const OP_AUX: u8 = 0xFA;

/// What a complete, valid RDB stream says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub bytes: u64,
    pub version: u32,
    /// None: the file carries no checksum (`rdbchecksum no`, or version < 5).
    pub crc64: Option<u64>,
    /// `redis-ver`, `repl-id`, `repl-offset`, `ctime`... as written by the server.
    pub aux: Map<String, Value>,
}

impl Summary {
    pub fn details(&self) -> Value {
        json!({
            "rdb_version": self.version,
            "rdb_bytes": self.bytes,
            "crc_checked": self.crc64.is_some(),
            "crc64": self.crc64.map(|c| format!("{c:016x}")),
            "rdb_aux": Value::Object(self.aux.clone()),
        })
    }

    /// Words for a verification record.
    pub fn checks(&self) -> Vec<String> {
        let mut v = vec![format!("RDB magic and version {} ok", self.version)];
        v.push(match self.crc64 {
            Some(c) => format!("RDB CRC-64 {c:016x} matches its content"),
            None => "RDB has no checksum (written with rdbchecksum no): not checked".into(),
        });
        v
    }
}

/// Why a stream is not a complete, valid RDB.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RdbError {
    #[error("not an RDB snapshot: it starts with {shown:?} instead of \"REDIS\"")]
    NotRdb { shown: String },
    #[error("not an RDB snapshot: bad version field {field:?}")]
    BadVersion { field: String },
    #[error("RDB is truncated: {bytes} bytes, shorter than its header")]
    ShorterThanHeader { bytes: u64 },
    #[error("RDB is truncated: it does not end with the EOF opcode")]
    NoEof,
    #[error("RDB is truncated after {bytes} bytes: no EOF opcode before the checksum")]
    NoEofBeforeChecksum { bytes: u64 },
    #[error("RDB checksum mismatch: the file says CRC-64 {stored:016x}, its content has {computed:016x} (damaged or truncated)")]
    ChecksumMismatch { stored: u64, computed: u64 },
}

pub struct Checker {
    digest: Digest<'static, u64, Table<16>>,
    /// The last 8 bytes seen: the checksum once the stream ends.
    tail: [u8; 8],
    tail_len: usize,
    /// The last byte fed to the digest (must be the EOF opcode).
    last_digested: Option<u8>,
    head: Vec<u8>,
    head_done: bool,
    aux: Map<String, Value>,
    version: Option<u32>,
    bytes: u64,
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

impl Checker {
    pub fn new() -> Self {
        Checker {
            digest: CRC64.digest(),
            tail: [0; 8],
            tail_len: 0,
            last_digested: None,
            head: Vec::new(),
            head_done: false,
            aux: Map::new(),
            version: None,
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Feeds the next bytes; fails early on a stream that is not an RDB.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), RdbError> {
        self.bytes += data.len() as u64;
        if !self.head_done {
            let want = HEAD_MAX - self.head.len();
            self.head.extend_from_slice(&data[..data.len().min(want)]);
            check_magic(&self.head)?;
            if self.version.is_none() {
                self.version = version_of(&self.head);
            }
            if let Some(aux) = parse_aux(&self.head) {
                self.aux = aux;
                self.head_done = true;
                self.head = Vec::new();
            } else if self.head.len() >= HEAD_MAX {
                self.head_done = true;
                self.head = Vec::new();
            }
        }
        if data.len() >= 8 {
            self.digest.update(&self.tail[..self.tail_len]);
            let body = &data[..data.len() - 8];
            self.digest.update(body);
            self.last_digested = body
                .last()
                .or(self.tail[..self.tail_len].last())
                .copied()
                .or(self.last_digested);
            self.tail.copy_from_slice(&data[data.len() - 8..]);
            self.tail_len = 8;
        } else {
            let mut both = [0u8; 16];
            let n = self.tail_len + data.len();
            both[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            both[self.tail_len..n].copy_from_slice(data);
            let out = n.saturating_sub(8);
            if out > 0 {
                self.digest.update(&both[..out]);
                self.last_digested = Some(both[out - 1]);
            }
            let keep = n - out;
            self.tail[..keep].copy_from_slice(&both[out..n]);
            self.tail_len = keep;
        }
        Ok(())
    }

    /// Checks the end of the stream: EOF opcode and checksum.
    pub fn finish(self) -> Result<Summary, RdbError> {
        if self.bytes < 9 {
            check_magic(&self.head)?;
            return Err(RdbError::ShorterThanHeader { bytes: self.bytes });
        }
        let version = self.version.unwrap_or(0);
        if version < 5 {
            // No checksum before RDB 5: the last byte is the EOF opcode.
            if self.tail[self.tail_len.saturating_sub(1)] != OP_EOF {
                return Err(RdbError::NoEof);
            }
            return Ok(Summary {
                bytes: self.bytes,
                version,
                crc64: None,
                aux: self.aux,
            });
        }
        if self.tail_len < 8 || self.last_digested != Some(OP_EOF) {
            return Err(RdbError::NoEofBeforeChecksum { bytes: self.bytes });
        }
        let stored = u64::from_le_bytes(self.tail);
        let computed = self.digest.finalize();
        if stored == 0 {
            return Ok(Summary {
                bytes: self.bytes,
                version,
                crc64: None,
                aux: self.aux,
            });
        }
        if stored != computed {
            return Err(RdbError::ChecksumMismatch { stored, computed });
        }
        Ok(Summary {
            bytes: self.bytes,
            version,
            crc64: Some(stored),
            aux: self.aux,
        })
    }
}

fn check_magic(head: &[u8]) -> Result<(), RdbError> {
    let n = head.len().min(5);
    if head[..n] != b"REDIS"[..n] {
        let shown: String = String::from_utf8_lossy(&head[..head.len().min(40)])
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        return Err(RdbError::NotRdb { shown });
    }
    if head.len() >= 9 && version_of(head).is_none() {
        return Err(RdbError::BadVersion {
            field: String::from_utf8_lossy(&head[5..9]).into_owned(),
        });
    }
    Ok(())
}

fn version_of(head: &[u8]) -> Option<u32> {
    let v = head.get(5..9)?;
    if !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses the aux fields after the 9-byte header; None if `head` ends
/// before the first non-aux opcode (more bytes needed).
fn parse_aux(head: &[u8]) -> Option<Map<String, Value>> {
    version_of(head)?;
    let mut out = Map::new();
    let mut p = 9;
    loop {
        let op = *head.get(p)?;
        if op != OP_AUX {
            return Some(out);
        }
        p += 1;
        let (k, np) = read_string(head, p)?;
        let (v, np) = read_string(head, np)?;
        p = np;
        let key = String::from_utf8_lossy(&k).into_owned();
        let val = match std::str::from_utf8(&v) {
            Ok(s) => match s.parse::<i64>() {
                Ok(i) if key != "redis-ver" && key != "repl-id" => json!(i),
                _ => json!(s),
            },
            Err(_) => json!(hex::encode(&v)),
        };
        out.insert(key, val);
    }
}

enum Len {
    Plain(u64),
    Special(u8),
}

fn read_len(b: &[u8], p: usize) -> Option<(Len, usize)> {
    let first = *b.get(p)?;
    Some(match first >> 6 {
        0 => (Len::Plain((first & 0x3f) as u64), p + 1),
        1 => (
            Len::Plain((((first & 0x3f) as u64) << 8) | *b.get(p + 1)? as u64),
            p + 2,
        ),
        2 if first == 0x80 => (
            Len::Plain(u32::from_be_bytes(b.get(p + 1..p + 5)?.try_into().ok()?) as u64),
            p + 5,
        ),
        2 if first == 0x81 => (
            Len::Plain(u64::from_be_bytes(b.get(p + 1..p + 9)?.try_into().ok()?)),
            p + 9,
        ),
        2 => return None,
        _ => (Len::Special(first & 0x3f), p + 1),
    })
}

fn read_string(b: &[u8], p: usize) -> Option<(Vec<u8>, usize)> {
    let (len, p) = read_len(b, p)?;
    match len {
        Len::Plain(n) => {
            let end = p.checked_add(usize::try_from(n).ok()?)?;
            Some((b.get(p..end)?.to_vec(), end))
        }
        Len::Special(0) => Some(((*b.get(p)? as i8).to_string().into_bytes(), p + 1)),
        Len::Special(1) => Some((
            i16::from_le_bytes(b.get(p..p + 2)?.try_into().ok()?)
                .to_string()
                .into_bytes(),
            p + 2,
        )),
        Len::Special(2) => Some((
            i32::from_le_bytes(b.get(p..p + 4)?.try_into().ok()?)
                .to_string()
                .into_bytes(),
            p + 4,
        )),
        Len::Special(3) => {
            // LZF-compressed: not expected in aux fields; skip it.
            let (Len::Plain(clen), p) = read_len(b, p)? else {
                return None;
            };
            let (_, p) = read_len(b, p)?;
            let end = p.checked_add(usize::try_from(clen).ok()?)?;
            b.get(p..end)?;
            Some((b"<lzf>".to_vec(), end))
        }
        Len::Special(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real RDB from redis 7.0.15 holding `a` = `b` (captured with SYNC).
    fn sample() -> Vec<u8> {
        let mut v = b"REDIS0010".to_vec();
        v.extend_from_slice(b"\xfa\tredis-ver\x067.0.15\xfa\nredis-bits\xc0@");
        v.extend_from_slice(b"\xfa\x0brepl-offset\xc2\x10\x27\x00\x00");
        v.extend_from_slice(b"\xfe\x00\xfb\x01\x00\x00\x01a\x01b\xff");
        let crc = CRC64.checksum(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    fn run(data: &[u8], chunk: usize) -> Result<Summary, RdbError> {
        let mut c = Checker::new();
        for part in data.chunks(chunk) {
            c.feed(part)?;
        }
        c.finish()
    }

    #[test]
    fn crc_is_redis_jones() {
        // The check value Redis' own crc64 test uses.
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn valid_in_any_chunking() {
        let s = sample();
        for chunk in [1, 3, 7, 8, 9, 64, 4096] {
            let sum = run(&s, chunk).unwrap();
            assert_eq!(sum.version, 10);
            assert!(sum.crc64.is_some());
            assert_eq!(sum.aux["redis-ver"], json!("7.0.15"));
            assert_eq!(sum.aux["redis-bits"], json!(64));
            assert_eq!(sum.aux["repl-offset"], json!(10000));
            assert_eq!(sum.bytes, s.len() as u64);
        }
    }

    #[test]
    fn zero_checksum_is_recorded_not_failed() {
        let mut s = sample();
        let n = s.len();
        s[n - 8..].fill(0);
        let sum = run(&s, 5).unwrap();
        assert_eq!(sum.crc64, None);
    }

    #[test]
    fn damage_truncation_and_garbage_fail() {
        let s = sample();
        let mut bad = s.clone();
        bad[40] ^= 1;
        assert!(run(&bad, 16)
            .unwrap_err()
            .to_string()
            .contains("checksum mismatch"));
        for cut in [3, 12, s.len() - 1, s.len() - 9] {
            let e = run(&s[..cut], 4).unwrap_err().to_string();
            assert!(
                e.contains("truncated") || e.contains("mismatch"),
                "{cut}: {e}"
            );
        }
        let e = run(b"-ERR unknown command\r\n", 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an RDB snapshot"), "{e}");
        let e = run(b"REDISxy10....", 64).unwrap_err().to_string();
        assert!(e.contains("bad version"), "{e}");
        assert_eq!(
            run(&s[..3], 4).unwrap_err(),
            RdbError::ShorterThanHeader { bytes: 3 }
        );
    }
}
