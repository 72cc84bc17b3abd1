//! The xbstream format of `mariadb-backup --stream=xbstream` (and Percona
//! XtraBackup's), read as it passes: chunk boundaries (a physical backup
//! is cut into parts between chunks), every payload's CRC-32, the file
//! list with sizes, and the small metadata files the tool writes last
//! (`xtrabackup_checkpoints`, `xtrabackup_binlog_info`, `xtrabackup_info`).
//!
//! A chunk: magic `XBSTCK01`, flags (1 byte), type (1 byte), path length
//! (u32 LE), path; a payload chunk (`P`) then has length (u64 LE), offset
//! in its file (u64 LE), CRC-32 of the payload (u32 LE) and the payload; an
//! end-of-file chunk (`E`) has nothing more. Any other type (XtraBackup 8's
//! sparse `S`) is refused by name: cexdr does not pass on what it cannot
//! check.
use std::collections::BTreeMap;

pub const MAGIC: &[u8; 8] = b"XBSTCK01";
/// Header bytes before the path.
const FIXED: usize = 14;
/// Payload chunk fields after the path: length, offset, CRC-32.
const PAYLOAD_FIELDS: usize = 20;
/// Longest path accepted (the tool's FN_REFLEN is 512).
const MAX_PATH: usize = 4096;
/// Metadata files kept whole while they pass (each a few hundred bytes).
pub const META_FILES: &[&str] = &[
    "xtrabackup_checkpoints",
    "xtrabackup_binlog_info",
    "xtrabackup_info",
    "backup-my.cnf",
];
const META_MAX: usize = 64 * 1024;

/// Where the reader is inside the stream: an explicit state, since chunks
/// cross the reads' buffers at any byte.
enum State {
    /// Collecting a chunk header (into `Parser::head`).
    Header,
    /// Inside a payload of `left` more bytes.
    Payload {
        left: u64,
        expected: u32,
        // CRC-32 (ISO-HDLC, zlib's) with the CPU's carry-less multiply:
        // a byte-wise table was the backup's main CPU cost.
        digest: crc32fast::Hasher,
        /// Index of a metadata file being kept, if this payload is one.
        meta: Option<usize>,
    },
}

/// An xbstream read incrementally; `advance` never consumes past the end
/// of the current header or payload, so a caller can cut between chunks.
pub struct Parser {
    state: State,
    head: Vec<u8>,
    path: String,
    /// Stream offset of the current position (for messages).
    offset: u64,
    /// Every file with its size (the end of its furthest payload).
    pub files: BTreeMap<String, u64>,
    /// Contents of the metadata files, in `META_FILES` order.
    pub meta: [Option<Vec<u8>>; 4],
    pub chunks: u64,
    pub payload_bytes: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            state: State::Header,
            head: Vec::with_capacity(FIXED + 256 + PAYLOAD_FIELDS),
            path: String::new(),
            offset: 0,
            files: BTreeMap::new(),
            meta: Default::default(),
            chunks: 0,
            payload_bytes: 0,
        }
    }
}

impl Parser {
    /// True between chunks: the stream may end or be cut here.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.head.is_empty()
    }

    /// The bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Consumes a prefix of `data` (at least one byte when `data` is not
    /// empty) that ends at or before the end of the current header or
    /// payload; returns its length.
    pub fn advance(&mut self, data: &[u8]) -> Result<usize, String> {
        if data.is_empty() {
            return Ok(0);
        }
        let n = match &mut self.state {
            State::Header => self.header_bytes(data)?,
            State::Payload { .. } => self.payload_bytes(data)?,
        };
        self.offset += n as u64;
        Ok(n)
    }

    /// The whole of `data`, chunk by chunk (verify, tests).
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            let n = self.advance(data)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Checks that the stream ended between chunks.
    pub fn finish(&self) -> Result<(), String> {
        if !self.at_boundary() {
            return Err(format!(
                "the xbstream ends inside a chunk of {:?} at byte {}: truncated",
                self.path, self.offset
            ));
        }
        Ok(())
    }

    /// A metadata file's text, if it passed.
    pub fn meta_text(&self, name: &str) -> Option<String> {
        let i = META_FILES.iter().position(|m| *m == name)?;
        self.meta[i]
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn header_bytes(&mut self, data: &[u8]) -> Result<usize, String> {
        // How many header bytes are needed: the fixed part, then the path,
        // then (payload chunks) the three fields.
        let need = |head: &[u8]| -> Result<usize, String> {
            if head.len() < FIXED {
                return Ok(FIXED);
            }
            let plen = u32::from_le_bytes(head[10..14].try_into().unwrap()) as usize;
            if plen == 0 || plen > MAX_PATH {
                return Err(format!("path length {plen}"));
            }
            Ok(match head[9] {
                b'P' => FIXED + plen + PAYLOAD_FIELDS,
                _ => FIXED + plen,
            })
        };
        let mut used = 0;
        loop {
            if self.head.len() >= FIXED {
                self.check_fixed()?;
            }
            let want = need(&self.head).map_err(|e| self.bad(&e))?;
            if self.head.len() >= want {
                break;
            }
            let take = (want - self.head.len()).min(data.len() - used);
            if take == 0 {
                return Ok(used);
            }
            self.head.extend_from_slice(&data[used..used + take]);
            used += take;
        }
        self.start_chunk()?;
        Ok(used)
    }

    fn check_fixed(&self) -> Result<(), String> {
        if &self.head[..8] != MAGIC {
            return Err(self.bad("no XBSTCK01 magic: not an xbstream chunk"));
        }
        match self.head[9] {
            b'P' | b'E' => Ok(()),
            b'S' => Err(self.bad("sparse chunk (type 'S', XtraBackup 8): not supported")),
            t => Err(self.bad(&format!("unknown chunk type {:?}", t as char))),
        }
    }

    /// The header is whole: record the chunk and enter its payload.
    fn start_chunk(&mut self) -> Result<(), String> {
        let plen = u32::from_le_bytes(self.head[10..14].try_into().unwrap()) as usize;
        let path = std::str::from_utf8(&self.head[FIXED..FIXED + plen])
            .map_err(|_| self.bad("path is not UTF-8"))?;
        if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(self.bad(&format!("path {path:?} is not a plain relative path")));
        }
        if self.path != path {
            self.path.clear();
            self.path.push_str(path);
        }
        self.chunks += 1;
        let kind = self.head[9];
        if kind == b'E' {
            self.files.entry(self.path.clone()).or_insert(0);
            self.head.clear();
            return Ok(());
        }
        let f = &self.head[FIXED + plen..];
        let len = u64::from_le_bytes(f[0..8].try_into().unwrap());
        let off = u64::from_le_bytes(f[8..16].try_into().unwrap());
        let expected = u32::from_le_bytes(f[16..20].try_into().unwrap());
        let end = off
            .checked_add(len)
            .ok_or_else(|| self.bad("payload offset overflows"))?;
        match self.files.get_mut(&self.path) {
            Some(size) => *size = (*size).max(end),
            None => {
                self.files.insert(self.path.clone(), end);
            }
        }
        let meta = META_FILES.iter().position(|m| *m == self.path);
        if let Some(i) = meta {
            let buf = self.meta[i].get_or_insert_with(Vec::new);
            if off == 0 {
                buf.clear();
            }
        }
        self.head.clear();
        self.state = State::Payload {
            left: len,
            expected,
            digest: crc32fast::Hasher::new(),
            meta,
        };
        if len == 0 {
            self.end_payload()?;
        }
        Ok(())
    }

    fn payload_bytes(&mut self, data: &[u8]) -> Result<usize, String> {
        let State::Payload {
            left, digest, meta, ..
        } = &mut self.state
        else {
            unreachable!("payload_bytes outside a payload")
        };
        let n = (*left).min(data.len() as u64) as usize;
        let part = &data[..n];
        digest.update(part);
        if let Some(i) = *meta {
            let buf = self.meta[i].get_or_insert_with(Vec::new);
            if buf.len() + n <= META_MAX {
                buf.extend_from_slice(part);
            }
        }
        *left -= n as u64;
        self.payload_bytes += n as u64;
        if *left == 0 {
            self.end_payload()?;
        }
        Ok(n)
    }

    fn end_payload(&mut self) -> Result<(), String> {
        let state = std::mem::replace(&mut self.state, State::Header);
        if let State::Payload {
            expected, digest, ..
        } = state
        {
            let got = digest.finalize();
            if got != expected {
                return Err(self.bad(&format!(
                    "payload CRC-32 {got:08x} differs from the chunk's {expected:08x}"
                )));
            }
        }
        Ok(())
    }

    fn bad(&self, why: &str) -> String {
        let at = if self.path.is_empty() {
            String::new()
        } else {
            format!(" (after {:?})", self.path)
        };
        format!("xbstream at byte {}{at}: {why}", self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(path: &str, kind: u8, off: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.push(0);
        v.push(kind);
        v.extend_from_slice(&(path.len() as u32).to_le_bytes());
        v.extend_from_slice(path.as_bytes());
        if kind == b'P' {
            v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            v.extend_from_slice(&off.to_le_bytes());
            v.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            v.extend_from_slice(payload);
        }
        v
    }

    fn sample() -> Vec<u8> {
        let mut s = chunk("ibdata1", b'P', 0, &[7u8; 1000]);
        s.extend(chunk("ibdata1", b'P', 1000, &[8u8; 500]));
        s.extend(chunk("ibdata1", b'E', 0, &[]));
        s.extend(chunk(
            "xtrabackup_checkpoints",
            b'P',
            0,
            b"backup_type = full-backuped\nto_lsn = 9\n",
        ));
        s.extend(chunk("xtrabackup_checkpoints", b'E', 0, &[]));
        s
    }

    #[test]
    fn reads_files_sizes_and_metadata_at_any_cut() {
        let s = sample();
        for step in [1, 3, 13, 64, 4096] {
            let mut p = Parser::default();
            let mut boundaries = 0;
            for piece in s.chunks(step) {
                let mut d = piece;
                while !d.is_empty() {
                    let n = p.advance(d).unwrap();
                    assert!(n > 0);
                    d = &d[n..];
                    if p.at_boundary() {
                        boundaries += 1;
                    }
                }
            }
            p.finish().unwrap();
            assert_eq!(boundaries, 5, "step {step}");
            assert_eq!(p.files["ibdata1"], 1500);
            assert_eq!(p.chunks, 5);
            assert!(p
                .meta_text("xtrabackup_checkpoints")
                .unwrap()
                .contains("to_lsn = 9"));
        }
    }

    #[test]
    fn damage_is_named() {
        let mut s = sample();
        s[40] ^= 1; // inside the first payload
        let e = Parser::default().feed(&s).unwrap_err();
        assert!(e.contains("CRC-32") && e.contains("ibdata1"), "{e}");

        let s = sample();
        let mut p = Parser::default();
        p.feed(&s[..s.len() - 3]).unwrap();
        assert!(p.finish().unwrap_err().contains("truncated"));

        let mut bad = chunk("x", b'S', 0, &[]);
        bad.extend_from_slice(&[0; 40]);
        let e = Parser::default().feed(&bad).unwrap_err();
        assert!(e.contains("sparse"), "{e}");

        let e = Parser::default()
            .feed(&chunk("../etc/passwd", b'E', 0, &[]))
            .unwrap_err();
        assert!(e.contains("not a plain relative path"), "{e}");

        let e = Parser::default()
            .feed(b"-- MySQL dump 10.19\n")
            .unwrap_err();
        assert!(e.contains("not an xbstream"), "{e}");
    }
}
