//! The tar format, written and read by hand: POSIX pax (what GNU tar writes
//! with `--format=pax --xattrs --acls -S`), read back together with the GNU
//! and ustar dialects older cexdr archives and other tools produce.
//!
//! Written by hand because the `tar` crate writes neither pax sparse files
//! nor `SCHILY.*` records, and its reader drops ownership, sub-second times
//! and extended attributes.
use std::io::{self, Read, Write};

pub const BLOCK: usize = 512;

/// Limit on one pax extended header or GNU long name: xattr values are at
/// most 64 KiB on Linux, so this is generous while a hostile size field
/// cannot make the reader allocate without bound.
const MAX_META: u64 = 16 << 20;
/// Limit on sparse map entries (16 bytes each in memory).
const MAX_SPARSE: u64 = 1 << 20;

pub const REGULAR: u8 = b'0';
pub const HARDLINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const CHAR: u8 = b'3';
pub const BLOCKDEV: u8 = b'4';
pub const DIRECTORY: u8 = b'5';
pub const FIFO: u8 = b'6';

#[derive(Debug, Clone, PartialEq)]
pub struct Sparse {
    /// The file's size once restored.
    pub realsize: u64,
    /// (offset, length) of each data region, ascending.
    pub map: Vec<(u64, u64)>,
}

/// One archive member's metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub path: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    /// Bytes of data following the header (for sparse files: the data
    /// regions only, the map already consumed by the reader).
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub link: Vec<u8>,
    pub devmajor: u32,
    pub devminor: u32,
    /// Extended attributes by full name (`user.x`, `system.posix_acl_access`).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// POSIX ACLs in text form, as GNU tar stores them.
    pub acl_access: Option<Vec<u8>>,
    pub acl_default: Option<Vec<u8>>,
    pub sparse: Option<Sparse>,
}

impl Meta {
    pub fn is_regular(&self) -> bool {
        matches!(self.kind, REGULAR | 0 | b'7')
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

// ---------------------------------------------------------------- writing

fn put_octal(field: &mut [u8], v: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

fn put_bytes(field: &mut [u8], v: &[u8]) -> bool {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
    v.len() <= field.len()
}

fn record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // The length counts itself: grow until the digits settle.
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn time_value(secs: i64, nsec: u32) -> String {
    if secs < 0 && nsec > 0 {
        format!("-{}.{:09}", -(secs + 1), 1_000_000_000 - nsec)
    } else {
        format!("{secs}.{nsec:09}")
    }
}

/// A name for the ustar field when the real one lives in a pax record:
/// the last bytes that fit, so tools without pax support get a hint.
fn short_name(prefix: &[u8], path: &[u8]) -> Vec<u8> {
    let base = path
        .rsplit(|&b| b == b'/')
        .find(|s| !s.is_empty())
        .unwrap_or(path);
    let mut n = prefix.to_vec();
    let room = 100usize.saturating_sub(n.len());
    n.extend_from_slice(&base[base.len().saturating_sub(room)..]);
    n
}

fn header_block(m: &Meta, name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put_bytes(&mut h[0..100], name);
    put_octal(&mut h[100..108], u64::from(m.mode & 0o7777));
    if !put_octal(&mut h[108..116], m.uid) {
        put_octal(&mut h[108..116], 0);
    }
    if !put_octal(&mut h[116..124], m.gid) {
        put_octal(&mut h[116..124], 0);
    }
    if !put_octal(&mut h[124..136], size) {
        put_octal(&mut h[124..136], 0);
    }
    put_octal(&mut h[136..148], m.mtime.max(0) as u64);
    h[156] = kind;
    put_bytes(&mut h[157..257], link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put_bytes(&mut h[265..297], &m.uname);
    put_bytes(&mut h[297..329], &m.gname);
    if matches!(kind, CHAR | BLOCKDEV) {
        put_octal(&mut h[329..337], u64::from(m.devmajor));
        put_octal(&mut h[337..345], u64::from(m.devminor));
    }
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// The sparse 1.0 map block(s) that open a sparse member's data.
pub fn sparse_map_block(s: &Sparse) -> Vec<u8> {
    let mut b = format!("{}\n", s.map.len()).into_bytes();
    for (off, len) in &s.map {
        b.extend_from_slice(format!("{off}\n{len}\n").as_bytes());
    }
    let pad = padding(b.len() as u64);
    b.resize(b.len() + pad, 0);
    b
}

/// Writes the header(s) of `m`: a pax extended header when anything does
/// not fit ustar (always, for the sub-second mtime), then the ustar header.
/// For a sparse file `m.size` is the size of its data regions; the map
/// block is written here, the caller then writes the regions and padding.
pub fn write_header(w: &mut impl Write, m: &Meta) -> io::Result<()> {
    let mut rec = Vec::new();
    let mut name = m.path.clone();
    let mut size = m.size;
    let mut map = Vec::new();
    if let Some(s) = &m.sparse {
        map = sparse_map_block(s);
        size += map.len() as u64;
        record(&mut rec, b"GNU.sparse.major", b"1");
        record(&mut rec, b"GNU.sparse.minor", b"0");
        record(&mut rec, b"GNU.sparse.name", &m.path);
        record(
            &mut rec,
            b"GNU.sparse.realsize",
            s.realsize.to_string().as_bytes(),
        );
        name = short_name(b"GNUSparseFile.0/", &m.path);
    } else if m.path.len() > 100 {
        record(&mut rec, b"path", &m.path);
        name = short_name(b"", &m.path);
    }
    let mut link = m.link.clone();
    if link.len() > 100 {
        record(&mut rec, b"linkpath", &m.link);
        link.truncate(100);
    }
    if m.uid > 0o7777777 {
        record(&mut rec, b"uid", m.uid.to_string().as_bytes());
    }
    if m.gid > 0o7777777 {
        record(&mut rec, b"gid", m.gid.to_string().as_bytes());
    }
    if m.uname.len() > 32 {
        record(&mut rec, b"uname", &m.uname);
    }
    if m.gname.len() > 32 {
        record(&mut rec, b"gname", &m.gname);
    }
    if size > 0o77777777777 {
        record(&mut rec, b"size", size.to_string().as_bytes());
    }
    record(
        &mut rec,
        b"mtime",
        time_value(m.mtime, m.mtime_nsec).as_bytes(),
    );
    if let Some(a) = &m.acl_access {
        record(&mut rec, b"SCHILY.acl.access", a);
    }
    if let Some(a) = &m.acl_default {
        record(&mut rec, b"SCHILY.acl.default", a);
    }
    for (k, v) in &m.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        record(&mut rec, &key, v);
    }
    let xname = short_name(b"PaxHeaders.0/", &m.path);
    let xmeta = Meta {
        mode: 0o644,
        mtime: m.mtime,
        ..Meta::default()
    };
    w.write_all(&header_block(&xmeta, &xname, b'x', rec.len() as u64, b""))?;
    w.write_all(&rec)?;
    w.write_all(&[0u8; BLOCK][..padding(rec.len() as u64)])?;
    w.write_all(&header_block(m, &name, m.kind, size, &link))?;
    w.write_all(&map)
}

/// The end-of-archive marker: two zero blocks.
pub fn write_end(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}

// ---------------------------------------------------------------- reading

fn field_str(f: &[u8]) -> &[u8] {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    &f[..end]
}

fn parse_num(f: &[u8], what: &str) -> io::Result<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian, the first byte's top bit is the marker.
        if f[0] != 0x80 {
            return Err(bad(format!("negative or oversized {what} in tar header")));
        }
        let mut v: u64 = 0;
        for &b in &f[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| bad(format!("{what} in tar header overflows")))?;
        }
        return Ok(v);
    }
    let s = field_str(f);
    let s: Vec<u8> = s.iter().copied().filter(|&b| b != b' ').collect();
    if s.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&s)
        .map_err(|_| bad(format!("{what} in tar header is not a number")))?;
    u64::from_str_radix(s, 8).map_err(|_| bad(format!("{what} in tar header is not octal: {s:?}")))
}

fn parse_dec(v: &[u8], what: &str) -> io::Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("pax record {what} is not a number")))
}

fn parse_time(v: &[u8]) -> io::Result<(i64, u32)> {
    let s = std::str::from_utf8(v).map_err(|_| bad("pax time is not text"))?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole
        .parse()
        .map_err(|_| bad(format!("pax time {s:?} is not a number")))?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("pax time {s:?} is not a number")));
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().unwrap_or(0);
    if neg {
        if nsec == 0 {
            Ok((-secs, 0))
        } else {
            Ok((-secs - 1, 1_000_000_000 - nsec))
        }
    } else {
        Ok((secs, nsec))
    }
}

#[derive(Default)]
struct Pending {
    records: Vec<(Vec<u8>, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

fn parse_records(data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("damaged pax record (no length)"))?;
        let len = parse_dec(&rest[..sp], "length")? as usize;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("damaged pax record (bad length)"));
        }
        let kv = &rest[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("damaged pax record (no '=')"))?;
        out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Reads members one by one; after [`TarReader::next`] the member's data
/// is read through `Read` (anything left unread is skipped by the next call).
pub struct TarReader<R> {
    inner: R,
    left: u64,
    pad: u64,
    /// Bytes read from `inner`, for callers that check a stored size.
    pub consumed: u64,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            left: 0,
            pad: 0,
            consumed: 0,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn raw_read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bad("tar archive ends in the middle of a member")
            } else {
                e
            }
        })?;
        self.consumed += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.raw_read_exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn read_meta_data(&mut self, size: u64, what: &str) -> io::Result<Vec<u8>> {
        if size > MAX_META {
            return Err(bad(format!("{what} of {size} bytes is too large")));
        }
        let mut v = vec![0u8; size as usize];
        self.raw_read_exact(&mut v)?;
        self.skip(padding(size) as u64)?;
        Ok(v)
    }

    /// The next member, or `None` at the end-of-archive marker.
    pub fn next_entry(&mut self) -> io::Result<Option<Meta>> {
        let (left, pad) = (self.left, self.pad);
        self.left = 0;
        self.pad = 0;
        self.skip(left)?;
        self.skip(pad)?;
        let mut p = Pending::default();
        loop {
            let mut h = [0u8; BLOCK];
            match self.inner.read(&mut h[..1])? {
                0 if p.records.is_empty() && p.long_name.is_none() && p.long_link.is_none() => {
                    // No end marker: GNU tar warns and accepts; so do we.
                    return Ok(None);
                }
                0 => return Err(bad("tar archive ends after an extended header")),
                _ => {}
            }
            self.consumed += 1;
            self.raw_read_exact(&mut h[1..])?;
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let stored: u64 = parse_num(&h[148..156], "checksum")?;
            let mut sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
            sum -= h[148..156].iter().map(|&b| u64::from(b)).sum::<u64>();
            sum += 8 * u64::from(b' ');
            if sum != stored {
                return Err(bad(
                    "tar header checksum mismatch (damaged or not a tar archive)",
                ));
            }
            let kind = h[156];
            let size = parse_num(&h[124..136], "size")?;
            match kind {
                b'x' => {
                    let d = self.read_meta_data(size, "pax header")?;
                    p.records.extend(parse_records(&d)?);
                    continue;
                }
                b'g' => {
                    // Global headers set defaults GNU tar itself mostly
                    // ignores on extraction; read past them.
                    self.read_meta_data(size, "pax global header")?;
                    continue;
                }
                b'L' => {
                    let d = self.read_meta_data(size, "GNU long name")?;
                    p.long_name = Some(field_str(&d).to_vec());
                    continue;
                }
                b'K' => {
                    let d = self.read_meta_data(size, "GNU long link name")?;
                    p.long_link = Some(field_str(&d).to_vec());
                    continue;
                }
                _ => {}
            }
            return self.member(&h, kind, size, p).map(Some);
        }
    }

    fn member(&mut self, h: &[u8; BLOCK], kind: u8, size: u64, p: Pending) -> io::Result<Meta> {
        let mut m = header_meta(h, kind, size)?;
        if let Some(n) = p.long_name {
            m.path = n;
        }
        if let Some(l) = p.long_link {
            m.link = l;
        }
        let mut sp = apply_records(&mut m, p.records)?;
        if kind == b'S' {
            return Err(bad(format!(
                "{}: old GNU sparse entries are not supported; re-create the archive with --format=pax",
                String::from_utf8_lossy(&m.path)
            )));
        }
        if let Some(major) = sp.major.take() {
            return self.sparse_member(m, &major, sp);
        }
        // Hard links, symlinks, directories and devices carry no data
        // (except in archives that say otherwise: skip what they say).
        self.left = m.size;
        self.pad = padding(m.size) as u64;
        Ok(m)
    }

    /// A GNU sparse 1.0 member: reads its map (at the start of its data)
    /// and checks it against the member's size and real size.
    fn sparse_member(&mut self, mut m: Meta, major: &[u8], sp: SparseRecords) -> io::Result<Meta> {
        if major != b"1" || sp.minor.as_deref() != Some(b"0") {
            return Err(bad(format!(
                "{}: pax sparse format {}.{} is not supported",
                String::from_utf8_lossy(&m.path),
                String::from_utf8_lossy(major),
                String::from_utf8_lossy(sp.minor.as_deref().unwrap_or(b"?"))
            )));
        }
        if let Some(n) = sp.name {
            m.path = n;
        }
        let realsize = sp
            .realsize
            .ok_or_else(|| bad("sparse member without GNU.sparse.realsize"))?;
        let member_size = m.size;
        self.left = member_size;
        let map = self.read_sparse_map(&m.path)?;
        let mut end = 0u64;
        let mut total = 0u64;
        for &(off, len) in &map {
            let e = off
                .checked_add(len)
                .filter(|&e| off >= end && e <= realsize);
            end = e.ok_or_else(|| {
                bad(format!(
                    "{}: damaged sparse map",
                    String::from_utf8_lossy(&m.path)
                ))
            })?;
            total = total
                .checked_add(len)
                .ok_or_else(|| bad("damaged sparse map"))?;
        }
        if total != self.left {
            return Err(bad(format!(
                "{}: sparse map covers {total} bytes but the member holds {}",
                String::from_utf8_lossy(&m.path),
                self.left
            )));
        }
        m.size = total;
        m.sparse = Some(Sparse { realsize, map });
        self.pad = padding(member_size) as u64;
        Ok(m)
    }

    /// Reads the decimal sparse 1.0 map at the start of the member's data.
    fn read_sparse_map(&mut self, path: &[u8]) -> io::Result<Vec<(u64, u64)>> {
        let damaged = || {
            bad(format!(
                "{}: damaged sparse map",
                String::from_utf8_lossy(path)
            ))
        };
        let mut block = [0u8; BLOCK];
        let mut pos = BLOCK;
        let mut next_num = |me: &mut Self| -> io::Result<u64> {
            let mut v: u64 = 0;
            let mut digits = 0;
            loop {
                if pos == BLOCK {
                    if me.left < BLOCK as u64 {
                        return Err(damaged());
                    }
                    me.raw_read_exact(&mut block)?;
                    me.left -= BLOCK as u64;
                    pos = 0;
                }
                let b = block[pos];
                pos += 1;
                match b {
                    b'0'..=b'9' => {
                        v = v
                            .checked_mul(10)
                            .and_then(|v| v.checked_add(u64::from(b - b'0')))
                            .ok_or_else(damaged)?;
                        digits += 1;
                    }
                    b'\n' if digits > 0 => return Ok(v),
                    _ => return Err(damaged()),
                }
            }
        };
        let n = next_num(self)?;
        if n > MAX_SPARSE {
            return Err(damaged());
        }
        let mut map = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let off = next_num(self)?;
            let len = next_num(self)?;
            map.push((off, len));
        }
        Ok(map)
    }
}

/// The GNU sparse 1.0 records of a member's pax header.
#[derive(Default)]
struct SparseRecords {
    major: Option<Vec<u8>>,
    minor: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    realsize: Option<u64>,
}

/// A member's metadata as its ustar (or GNU) header block gives it.
fn header_meta(h: &[u8; BLOCK], kind: u8, size: u64) -> io::Result<Meta> {
    let ustar = &h[257..263] == b"ustar\0";
    let mut path = field_str(&h[0..100]).to_vec();
    if ustar && h[345] != 0 {
        let mut full = field_str(&h[345..500]).to_vec();
        full.push(b'/');
        full.extend_from_slice(&path);
        path = full;
    }
    let mut m = Meta {
        path,
        kind,
        mode: (parse_num(&h[100..108], "mode")? & 0o7777) as u32,
        uid: parse_num(&h[108..116], "uid")?,
        gid: parse_num(&h[116..124], "gid")?,
        uname: field_str(&h[265..297]).to_vec(),
        gname: field_str(&h[297..329]).to_vec(),
        size,
        mtime: parse_num(&h[136..148], "mtime")?.min(i64::MAX as u64) as i64,
        link: field_str(&h[157..257]).to_vec(),
        ..Meta::default()
    };
    if matches!(kind, CHAR | BLOCKDEV) {
        m.devmajor = u32::try_from(parse_num(&h[329..337], "devmajor")?)
            .map_err(|_| bad("device major out of range"))?;
        m.devminor = u32::try_from(parse_num(&h[337..345], "devminor")?)
            .map_err(|_| bad("device minor out of range"))?;
    }
    Ok(m)
}

/// Applies a member's pax records to `m`, in order (a later one wins);
/// the sparse ones are returned for the caller to read the map with.
fn apply_records(m: &mut Meta, records: Vec<(Vec<u8>, Vec<u8>)>) -> io::Result<SparseRecords> {
    let mut sp = SparseRecords::default();
    for (k, v) in records {
        match k.as_slice() {
            b"path" => m.path = v,
            b"linkpath" => m.link = v,
            b"uid" => m.uid = parse_dec(&v, "uid")?,
            b"gid" => m.gid = parse_dec(&v, "gid")?,
            b"uname" => m.uname = v,
            b"gname" => m.gname = v,
            b"size" => m.size = parse_dec(&v, "size")?,
            b"mtime" => (m.mtime, m.mtime_nsec) = parse_time(&v)?,
            b"SCHILY.acl.access" => m.acl_access = Some(v),
            b"SCHILY.acl.default" => m.acl_default = Some(v),
            b"SCHILY.devmajor" => {
                m.devmajor = u32::try_from(parse_dec(&v, "devmajor")?)
                    .map_err(|_| bad("device major out of range"))?
            }
            b"SCHILY.devminor" => {
                m.devminor = u32::try_from(parse_dec(&v, "devminor")?)
                    .map_err(|_| bad("device minor out of range"))?
            }
            b"GNU.sparse.major" => sp.major = Some(v),
            b"GNU.sparse.minor" => sp.minor = Some(v),
            b"GNU.sparse.name" => sp.name = Some(v),
            b"GNU.sparse.realsize" => sp.realsize = Some(parse_dec(&v, "GNU.sparse.realsize")?),
            b"GNU.sparse.map"
            | b"GNU.sparse.size"
            | b"GNU.sparse.numblocks"
            | b"GNU.sparse.offset"
            | b"GNU.sparse.numbytes" => {
                return Err(bad(format!(
                    "{}: pax sparse format 0.x is not supported (GNU tar writes 1.0 by default)",
                    String::from_utf8_lossy(&m.path)
                )))
            }
            _ => {
                if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                    m.xattrs.push((name.to_vec(), v));
                }
                // Other records (atime, ctime, comments, charset) do not
                // change what is restored.
            }
        }
    }
    Ok(sp)
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(bad("tar archive ends in the middle of a member"));
        }
        self.left -= n as u64;
        self.consumed += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------- ACLs

// The kernel's `system.posix_acl_*` xattr: a version word, then (tag, perm, id).
const ACL_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

fn perm_text(p: u16) -> String {
    let mut s = String::with_capacity(3);
    s.push(if p & 4 != 0 { 'r' } else { '-' });
    s.push(if p & 2 != 0 { 'w' } else { '-' });
    s.push(if p & 1 != 0 { 'x' } else { '-' });
    s
}

/// The kernel's binary ACL as the text GNU tar stores (`acl_to_text`
/// form, numeric qualifiers: ids are what ownership restores too).
pub fn acl_to_text(bin: &[u8]) -> Option<Vec<u8>> {
    if bin.len() < 4 || !(bin.len() - 4).is_multiple_of(8) {
        return None;
    }
    if u32::from_le_bytes(bin[0..4].try_into().ok()?) != ACL_VERSION {
        return None;
    }
    let mut out = String::new();
    for e in bin[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let line = match tag {
            ACL_USER_OBJ => format!("user::{}", perm_text(perm)),
            ACL_USER => format!("user:{id}:{}", perm_text(perm)),
            ACL_GROUP_OBJ => format!("group::{}", perm_text(perm)),
            ACL_GROUP => format!("group:{id}:{}", perm_text(perm)),
            ACL_MASK => format!("mask::{}", perm_text(perm)),
            ACL_OTHER => format!("other::{}", perm_text(perm)),
            _ => return None,
        };
        out.push_str(&line);
        out.push('\n');
    }
    Some(out.into_bytes())
}

/// Why GNU tar's ACL text was not understood; each names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("ACL text is not UTF-8")]
    NotUtf8,
    #[error("ACL entry {0:?} is not tag:qualifier:perms")]
    Shape(String),
    #[error("ACL entry {0:?} has bad permissions")]
    Perms(String),
    #[error("ACL entry {line:?}: unknown {}", if *.user { "user" } else { "group" })]
    UnknownId { line: String, user: bool },
    #[error("ACL entry {0:?} has an unknown tag")]
    Tag(String),
}

/// GNU tar's ACL text back into the kernel's binary form. Qualifiers are
/// numeric ids or names (resolved by `resolve(is_user, name)`).
pub fn acl_from_text(
    text: &[u8],
    resolve: impl Fn(bool, &str) -> Option<u32>,
) -> Result<Vec<u8>, AclError> {
    let text = std::str::from_utf8(text).map_err(|_| AclError::NotUtf8)?;
    let mut entries: Vec<(u16, u32, u16)> = Vec::new();
    for raw in text.split(['\n', ',']) {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split(':').collect();
        // star writes a fourth field (the numeric id): GNU tar drops it too.
        if parts.len() < 3 || parts.len() > 4 {
            return Err(AclError::Shape(line.to_owned()));
        }
        let (tag, qual, perms) = (parts[0], parts[1], parts[2]);
        let mut perm = 0u16;
        for c in perms.chars() {
            perm |= match c {
                'r' => 4,
                'w' => 2,
                'x' => 1,
                '-' => 0,
                _ => return Err(AclError::Perms(line.to_owned())),
            };
        }
        let user = matches!(tag, "user" | "u");
        let group = matches!(tag, "group" | "g");
        let id = |is_user: bool| -> Result<u32, AclError> {
            qual.parse::<u32>()
                .ok()
                .or_else(|| resolve(is_user, qual))
                .ok_or_else(|| AclError::UnknownId {
                    line: line.to_owned(),
                    user: is_user,
                })
        };
        let e = match (user, group, tag, qual.is_empty()) {
            (true, _, _, true) => (ACL_USER_OBJ, u32::MAX, perm),
            (true, _, _, false) => (ACL_USER, id(true)?, perm),
            (_, true, _, true) => (ACL_GROUP_OBJ, u32::MAX, perm),
            (_, true, _, false) => (ACL_GROUP, id(false)?, perm),
            (_, _, "mask" | "m", _) => (ACL_MASK, u32::MAX, perm),
            (_, _, "other" | "o", _) => (ACL_OTHER, u32::MAX, perm),
            _ => return Err(AclError::Tag(line.to_owned())),
        };
        entries.push(e);
    }
    // The kernel wants entries ordered by tag, then id.
    entries.sort_by_key(|&(t, id, _)| (t, id));
    let mut out = ACL_VERSION.to_le_bytes().to_vec();
    for (t, id, p) in entries {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lengths_count_themselves() {
        for n in [0usize, 1, 85, 86, 87, 995, 996, 997, 5000] {
            let mut out = Vec::new();
            record(&mut out, b"k", &vec![b'v'; n]);
            let sp = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value of {n} bytes");
        }
    }

    #[test]
    fn times_round_trip_including_negative() {
        for (s, ns) in [
            (0i64, 0u32),
            (1796112229, 621948798),
            (-2, 500_000_000),
            (-1, 0),
        ] {
            let t = time_value(s, ns);
            assert_eq!(parse_time(t.as_bytes()).unwrap(), (s, ns), "{t}");
        }
        assert_eq!(parse_time(b"12.5").unwrap(), (12, 500_000_000));
    }

    #[test]
    fn header_round_trip_with_long_names_and_xattrs() {
        let m = Meta {
            path: vec![b'a'; 300],
            kind: REGULAR,
            mode: 0o640,
            uid: 3_000_000,
            gid: 7,
            uname: b"svc".to_vec(),
            gname: b"grp".to_vec(),
            size: 3,
            mtime: 1_700_000_000,
            mtime_nsec: 123,
            link: Vec::new(),
            xattrs: vec![(b"user.bin".to_vec(), vec![0, 1, 255, b'\n'])],
            acl_access: Some(
                b"user::rw-\nuser:1234:r-x\ngroup::r--\nmask::r-x\nother::---\n".to_vec(),
            ),
            ..Meta::default()
        };
        let mut out = Vec::new();
        write_header(&mut out, &m).unwrap();
        out.extend_from_slice(b"abc");
        out.resize(out.len() + padding(3), 0);
        write_end(&mut out).unwrap();
        let mut r = TarReader::new(&out[..]);
        let got = r.next_entry().unwrap().unwrap();
        assert_eq!(got, m);
        let mut data = Vec::new();
        r.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"abc");
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn acl_text_and_binary_round_trip() {
        let text = b"user::rw-\nuser:1234:r-x\ngroup::r--\ngroup:55:rwx\nmask::rwx\nother::---\n";
        let bin = acl_from_text(text, |_, _| None).unwrap();
        assert_eq!(acl_to_text(&bin).unwrap(), text.to_vec());
        assert!(acl_from_text(b"user:nobody-here:rwx", |_, _| None).is_err());
    }

    fn sparse_archive(map: Vec<(u64, u64)>, realsize: u64, data: &[u8]) -> Vec<u8> {
        let m = Meta {
            path: b"etc/sparse.img".to_vec(),
            kind: REGULAR,
            mode: 0o644,
            size: data.len() as u64,
            sparse: Some(Sparse { realsize, map }),
            ..Meta::default()
        };
        let mut out = Vec::new();
        write_header(&mut out, &m).unwrap();
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64), 0);
        write_end(&mut out).unwrap();
        out
    }

    #[test]
    fn sparse_members_round_trip_and_bad_maps_are_refused() {
        let ar = sparse_archive(vec![(0, 2), (1000, 3), (5000, 0)], 5000, b"abxyz");
        let mut r = TarReader::new(&ar[..]);
        let m = r.next_entry().unwrap().unwrap();
        assert_eq!(m.path, b"etc/sparse.img");
        assert_eq!(m.size, 5);
        assert_eq!(m.sparse.unwrap().map, vec![(0, 2), (1000, 3), (5000, 0)]);
        let mut data = Vec::new();
        r.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"abxyz");
        assert!(r.next_entry().unwrap().is_none());
        // A region past the real size, overlapping regions, a map that
        // does not add up to the data: each an error, never a panic.
        for (map, real) in [
            (vec![(4999, 5)], 5000),
            (vec![(0, 3), (1, 2)], 5000),
            (vec![(u64::MAX, 5)], 5000),
            (vec![(0, 4)], 5000),
        ] {
            let ar = sparse_archive(map.clone(), real, b"abxyz");
            let err = TarReader::new(&ar[..]).next_entry().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{map:?}: {err}");
        }
    }
}
