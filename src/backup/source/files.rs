//! Config-folder backups: a POSIX pax tar stream of the listed folders
//! (gzip-compressed by the pipeline), and the guarded restore of one.
//!
//! Kept, as `tar --format=pax --xattrs --acls -S` keeps them: numeric owner
//! and group (with names), modes, nanosecond mtimes, symlinks (never
//! followed), hard links, FIFOs and device nodes, extended attributes,
//! POSIX ACLs, and holes (GNU sparse 1.0, found with SEEK_DATA/SEEK_HOLE).
//! Sockets are skipped with a warning, as tar does. A file that changes or
//! vanishes while it is read becomes a manifest warning.
use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::FutureExt;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::pax::{self, Meta, Sparse, TarReader};
use super::{Extract, Opened, Report, Source};
use crate::base::ByteStream;
use crate::error::{Error, Result};
use crate::pipeline::{self, ChannelWriter};

#[derive(Debug, Clone, PartialEq)]
pub struct FilesSpec {
    pub paths: Vec<PathBuf>,
    pub exclude: Vec<String>,
}

/// The keys of a files job (`paths`, `exclude`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilesKeys {
    paths: Option<Vec<PathBuf>>,
    exclude: Option<Vec<String>>,
}

impl super::FromPolicy for FilesSpec {
    type Keys = FilesKeys;
    /// A drill restores into a scratch folder under `scratch`.
    const DRILL_KEYS: &'static [&'static str] = &["scratch"];

    fn from_policy(k: FilesKeys, input: &super::PolicyInput<'_>) -> Result<FilesSpec> {
        let paths = k
            .paths
            .ok_or_else(|| input.err("paths", "required for kind = \"files\""))?;
        if paths.is_empty() {
            return Err(input.err("paths", "list at least one folder"));
        }
        let exclude = k.exclude.unwrap_or_default();
        for g in &exclude {
            globset::Glob::new(g.trim_end_matches('/'))
                .map_err(|e| input.err("exclude", format!("{g:?}: {e}")))?;
        }
        Ok(FilesSpec {
            paths: paths.iter().map(|p| input.resolve(p)).collect(),
            exclude,
        })
    }
}

impl super::SpecInfo for FilesSpec {
    fn describe(&self) -> String {
        let paths: Vec<_> = self.paths.iter().map(|p| p.display().to_string()).collect();
        let mut out = format!("  folders: {}\n", paths.join(", "));
        if !self.exclude.is_empty() {
            out.push_str(&format!("  exclude: {}\n", self.exclude.join(", ")));
        }
        out
    }
}

pub struct FilesSource {
    job: String,
    spec: FilesSpec,
}

impl FilesSource {
    pub fn new(job: String, spec: FilesSpec) -> Self {
        FilesSource { job, spec }
    }
}

/// Exclude rules: `*.swp` matches a name or a relative path; `cache/`
/// matches only directories.
struct Excludes {
    any: GlobSet,
    dirs: GlobSet,
}

impl Excludes {
    fn new(patterns: &[String]) -> Result<Self> {
        let (mut any, mut dirs) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for p in patterns {
            let (target, pat) = match p.strip_suffix('/') {
                Some(d) => (&mut dirs, d),
                None => (&mut any, p.as_str()),
            };
            let glob = GlobBuilder::new(pat)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Usage(format!("exclude pattern {p:?}: {e}")))?;
            target.add(glob);
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Usage(format!("exclude patterns: {e}")))
        };
        Ok(Excludes {
            any: build(any)?,
            dirs: build(dirs)?,
        })
    }

    fn excluded(&self, rel: &Path, is_dir: bool) -> bool {
        let name = rel.file_name().map(Path::new).unwrap_or(rel);
        let hit = |s: &GlobSet| s.is_match(rel) || s.is_match(name);
        hit(&self.any) || (is_dir && hit(&self.dirs))
    }
}

#[derive(Default)]
struct Stats {
    files: u64,
    dirs: u64,
    symlinks: u64,
    hard_links: u64,
    special_files: u64,
    sparse_files: u64,
    xattrs: u64,
    acls: u64,
    file_bytes: u64,
}

/// Reads exactly `len` bytes: pads with zeros if the file shrank and stops
/// at `len` if it grew, so the tar header stays truthful.
struct ExactReader<R> {
    inner: R,
    left: u64,
    short: bool,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = if self.short {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Every extended attribute of `path` (not following symlinks); empty where
/// the filesystem has none.
fn list_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    let names = loop {
        // SAFETY: a null buffer asks for the size only.
        let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: buf has the length passed.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(e);
        }
        buf.truncate(n as usize);
        break buf;
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).expect("split on NUL");
        let value = loop {
            // SAFETY: as above.
            let n = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENODATA) {
                    break None; // removed in between
                }
                return Err(e);
            }
            let mut v = vec![0u8; n as usize];
            // SAFETY: v has the length passed.
            let n =
                unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ERANGE) => continue,
                    Some(libc::ENODATA) => break None,
                    _ => return Err(e),
                }
            }
            v.truncate(n as usize);
            break Some(v);
        };
        if let Some(v) = value {
            out.push((name.to_vec(), v));
        }
    }
    Ok(out)
}

/// The data regions of a file with holes (`SEEK_DATA`/`SEEK_HOLE`), or
/// `None` when it has none (or the filesystem cannot say).
fn data_regions(file: &fs::File, len: u64) -> Option<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let end = i64::try_from(len).ok()?;
    let mut regions = Vec::new();
    let mut pos: i64 = 0;
    while pos < end {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return None;
        }
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return None;
        }
        let hole = hole.min(end);
        regions.push((data as u64, (hole - data) as u64));
        pos = hole;
    }
    if regions.len() == 1 && regions[0] == (0, len) || len == 0 {
        return None;
    }
    // GNU tar ends the map at the file size, so the trailing hole is kept.
    if regions.last().is_none_or(|&(o, l)| o + l < len) {
        regions.push((len, 0));
    }
    Some(regions)
}

fn user_name(uid: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: zeroed passwd filled by getpwuid_r from our buffer.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res = std::ptr::null_mut();
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut res) };
    if rc != 0 || res.is_null() {
        return Vec::new();
    }
    // SAFETY: pw_name points into buf, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        .to_bytes()
        .to_vec()
}

fn group_name(gid: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in user_name.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut res = std::ptr::null_mut();
    let rc =
        unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut res) };
    if rc != 0 || res.is_null() {
        return Vec::new();
    }
    // SAFETY: gr_name points into buf, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(gr.gr_name) }
        .to_bytes()
        .to_vec()
}

struct Walker<'a, W: Write> {
    out: W,
    excludes: &'a Excludes,
    warnings: &'a Mutex<Vec<String>>,
    stats: Stats,
    /// First archive name of each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    names: HashMap<(bool, u32), Vec<u8>>,
}

impl<W: Write> Walker<'_, W> {
    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.lock().unwrap().push(msg);
    }

    fn name_of(&mut self, user: bool, id: u32) -> Vec<u8> {
        self.names
            .entry((user, id))
            .or_insert_with(|| if user { user_name(id) } else { group_name(id) })
            .clone()
    }

    fn meta(&mut self, path: &Path, name: &[u8], m: &fs::Metadata, kind: u8) -> io::Result<Meta> {
        let mut xattrs = match list_xattrs(path) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: reading extended attributes: {e}", path.display()),
                ))
            }
        };
        xattrs.sort();
        let mut acl_access = None;
        let mut acl_default = None;
        for (k, v) in &xattrs {
            match k.as_slice() {
                b"system.posix_acl_access" => acl_access = pax::acl_to_text(v),
                b"system.posix_acl_default" => acl_default = pax::acl_to_text(v),
                _ => self.stats.xattrs += 1,
            }
        }
        self.stats.acls += acl_access.is_some() as u64 + acl_default.is_some() as u64;
        let rdev = m.rdev();
        Ok(Meta {
            path: name.to_vec(),
            kind,
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            uname: self.name_of(true, m.uid()),
            gname: self.name_of(false, m.gid()),
            size: 0,
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec().clamp(0, 999_999_999) as u32,
            link: Vec::new(),
            devmajor: libc::major(rdev),
            devminor: libc::minor(rdev),
            // GNU tar keeps the binary ACL xattrs next to the text form.
            xattrs,
            acl_access,
            acl_default,
            sparse: None,
        })
    }

    fn vanished(&self, path: &Path, e: io::Error, when: &str) -> io::Result<()> {
        if e.kind() == io::ErrorKind::NotFound {
            self.warn(format!("{} vanished {when} it was read", path.display()));
            Ok(())
        } else {
            Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
    }

    /// Archives `path` under the archive name `name`; `rel` is the path below
    /// the configured folder, for exclude rules.
    fn add(&mut self, path: &Path, name: &Path, rel: &Path) -> io::Result<()> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return self.vanished(path, e, "before"),
        };
        let ft = meta.file_type();
        if !rel.as_os_str().is_empty() && self.excludes.excluded(rel, ft.is_dir()) {
            return Ok(());
        }
        let mut aname = name.as_os_str().as_bytes().to_vec();
        if ft.is_dir() {
            aname.push(b'/');
            return self.add_dir(path, name, rel, &aname, &meta);
        }
        if ft.is_socket() {
            self.warn(format!(
                "{} is a socket; skipped (as tar does: a socket belongs to a running process)",
                path.display()
            ));
            return Ok(());
        }
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())).cloned() {
                return self.add_hard_link(aname, first, &meta);
            }
            self.links.insert((meta.dev(), meta.ino()), aname.clone());
        }
        if ft.is_symlink() {
            self.add_symlink(path, &aname, &meta)
        } else if ft.is_file() {
            self.add_file(path, &aname)
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            self.add_special(path, &aname, &meta)
        } else {
            self.warn(format!(
                "{} has a file type cexdr does not know; skipped",
                path.display()
            ));
            Ok(())
        }
    }

    /// Writes the folder's header, then each child in name order.
    fn add_dir(
        &mut self,
        path: &Path,
        name: &Path,
        rel: &Path,
        aname: &[u8],
        meta: &fs::Metadata,
    ) -> io::Result<()> {
        let m = self.meta(path, aname, meta, pax::DIRECTORY)?;
        pax::write_header(&mut self.out, &m)?;
        self.stats.dirs += 1;
        let mut children: Vec<_> = match fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
            Err(e) => return self.vanished(path, e, "while"),
        };
        children.sort();
        for c in children {
            self.add(&path.join(&c), &name.join(&c), &rel.join(&c))?;
        }
        Ok(())
    }

    /// A further name of an inode already archived as `first`.
    fn add_hard_link(
        &mut self,
        aname: Vec<u8>,
        first: Vec<u8>,
        meta: &fs::Metadata,
    ) -> io::Result<()> {
        // The link carries no attributes of its own: the inode is the first entry's.
        let m = Meta {
            path: aname,
            kind: pax::HARDLINK,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            uname: self.name_of(true, meta.uid()),
            gname: self.name_of(false, meta.gid()),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
            link: first,
            ..Meta::default()
        };
        pax::write_header(&mut self.out, &m)?;
        self.stats.hard_links += 1;
        Ok(())
    }

    /// The symlink itself, never followed.
    fn add_symlink(&mut self, path: &Path, aname: &[u8], meta: &fs::Metadata) -> io::Result<()> {
        let target = match fs::read_link(path) {
            Ok(t) => t,
            Err(e) => return self.vanished(path, e, "before"),
        };
        let mut m = self.meta(path, aname, meta, pax::SYMLINK)?;
        m.link = target.as_os_str().as_bytes().to_vec();
        pax::write_header(&mut self.out, &m)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// A regular file: header, data (holes as a sparse map), padding, then
    /// a warning if it changed while it was read.
    fn add_file(&mut self, path: &Path, aname: &[u8]) -> io::Result<()> {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return self.vanished(path, e, "before"),
        };
        let before = file.metadata()?;
        let len = before.len();
        let mut m = self.meta(path, aname, &before, pax::REGULAR)?;
        let short = match data_regions(&file, len) {
            Some(map) => self.copy_sparse(&file, &mut m, len, map)?,
            None => self.copy_whole(&file, &mut m, len)?,
        };
        self.out
            .write_all(&[0u8; pax::BLOCK][..pax::padding(m.size)])?;
        self.check_unchanged(path, &file, &before, short)?;
        self.stats.files += 1;
        self.stats.file_bytes += len;
        Ok(())
    }

    /// Header with the sparse map, then each data region; true if the file
    /// ended early.
    fn copy_sparse(
        &mut self,
        file: &fs::File,
        m: &mut Meta,
        len: u64,
        map: Vec<(u64, u64)>,
    ) -> io::Result<bool> {
        let mut short = false;
        m.size = map.iter().map(|r| r.1).sum();
        m.sparse = Some(Sparse {
            realsize: len,
            map: map.clone(),
        });
        pax::write_header(&mut self.out, m)?;
        for (off, n) in map {
            let mut reader = ExactReader {
                inner: ReadAt { file, pos: off },
                left: n,
                short: false,
            };
            io::copy(&mut reader, &mut self.out)?;
            short |= reader.short;
        }
        self.stats.sparse_files += 1;
        Ok(short)
    }

    /// Header, then all `len` bytes; true if the file ended early.
    fn copy_whole(&mut self, file: &fs::File, m: &mut Meta, len: u64) -> io::Result<bool> {
        m.size = len;
        pax::write_header(&mut self.out, m)?;
        // Positional: the hole probe moved the file offset.
        let mut reader = ExactReader {
            inner: ReadAt { file, pos: 0 },
            left: len,
            short: false,
        };
        io::copy(&mut reader, &mut self.out)?;
        Ok(reader.short)
    }

    /// Warns if the file changed size or mtime, or vanished, while it was read.
    fn check_unchanged(
        &self,
        path: &Path,
        file: &fs::File,
        before: &fs::Metadata,
        short: bool,
    ) -> io::Result<()> {
        let len = before.len();
        let grew = file
            .read_at(&mut [0u8; 1], len)
            .map(|n| n > 0)
            .unwrap_or(false);
        let after = file.metadata()?;
        if short
            || grew
            || after.len() != before.len()
            || after.mtime() != before.mtime()
            || after.mtime_nsec() != before.mtime_nsec()
        {
            self.warn(format!(
                "{} changed while it was read; the archived copy may be inconsistent",
                path.display()
            ));
        } else if !path.exists() {
            self.warn(format!("{} vanished while it was read", path.display()));
        }
        Ok(())
    }

    /// A FIFO or device node: a header only.
    fn add_special(&mut self, path: &Path, aname: &[u8], meta: &fs::Metadata) -> io::Result<()> {
        let ft = meta.file_type();
        let kind = if ft.is_fifo() {
            pax::FIFO
        } else if ft.is_char_device() {
            pax::CHAR
        } else {
            pax::BLOCKDEV
        };
        let m = self.meta(path, aname, meta, kind)?;
        pax::write_header(&mut self.out, &m)?;
        self.stats.special_files += 1;
        Ok(())
    }
}

/// Positional reads, so the sparse walk never depends on the file offset.
struct ReadAt<'a> {
    file: &'a fs::File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The archive name of a configured folder: its absolute path without the leading `/`.
fn archive_root(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

#[async_trait]
impl Source for FilesSource {
    async fn open(&self) -> Result<Opened> {
        for p in &self.spec.paths {
            match fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::source_err(
                        p.display().to_string(),
                        "is not a folder",
                    ))
                }
                Err(e) => return Err(Error::source_from(p.display().to_string(), e)),
            }
        }
        let excludes = Excludes::new(&self.spec.exclude)?;
        let (writer, stream) = ChannelWriter::new(8, 256 << 10);
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let (paths, w2, job) = (self.spec.paths.clone(), warnings.clone(), self.job.clone());
        let failer = writer.failer();
        let task = tokio::task::spawn_blocking(move || -> io::Result<Stats> {
            let res = (|| -> io::Result<Stats> {
                let mut walker = Walker {
                    out: writer,
                    excludes: &excludes,
                    warnings: &w2,
                    stats: Stats::default(),
                    links: HashMap::new(),
                    names: HashMap::new(),
                };
                for p in &paths {
                    walker.add(p, &archive_root(p), Path::new(""))?;
                }
                let Walker { mut out, stats, .. } = walker;
                pax::write_end(&mut out)?;
                out.finish()?;
                Ok(stats)
            })();
            // A failed tar must never look complete to the store: end the
            // stream with the error.
            if let Err(e) = &res {
                failer.fail(io::Error::new(e.kind(), e.to_string()));
            }
            res
        });
        let finish = async move {
            let stats = match task.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(Error::source_from(format!("job {job}"), e)),
                Err(e) => return Err(Error::source_from(format!("job {job}"), e)),
            };
            let warnings = std::mem::take(&mut *warnings.lock().unwrap());
            Ok(Report {
                details: serde_json::json!({
                    "files": stats.files,
                    "directories": stats.dirs,
                    "symlinks": stats.symlinks,
                    "hard_links": stats.hard_links,
                    "special_files": stats.special_files,
                    "sparse_files": stats.sparse_files,
                    "xattrs": stats.xattrs,
                    "acls": stats.acls,
                    "file_bytes": stats.file_bytes,
                }),
                warnings,
            })
        }
        .boxed();
        let paths: Vec<String> = self
            .spec
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Ok(Opened {
            // The per-file list for restore tests (files_list.rs).
            extracts: vec![super::files_list::record(Extract {
                name: "files.tar".into(),
                stream,
                finish,
            })],
            details: serde_json::json!({ "paths": paths, "exclude": self.spec.exclude }),
            parts: None,
        })
    }
}

// ---------------------------------------------------------------- restore

fn hostile(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Lexically normalises `p` (no filesystem access); `None` if it climbs above its start.
fn normalise(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[derive(Debug, Default)]
pub struct Unpacked {
    pub entries: u64,
    /// Entries not restored, each naming the path and why.
    pub skipped: Vec<String>,
    /// Things restored with less than the archive holds (ownership as a
    /// non-root user, an extended attribute the filesystem refused).
    pub warnings: Vec<String>,
}

/// The archive's names relative to the target, refusing `..` and absolute paths.
fn inside(path: &Path) -> Option<PathBuf> {
    normalise(path).filter(|p| {
        !p.as_os_str().is_empty() && !path.components().any(|c| c == Component::ParentDir)
    })
}

/// No parent of `rel` may be a symlink (a link then a file through it
/// would write outside the target).
fn through_symlink(dest: &Path, rel: &Path) -> bool {
    let mut cur = dest.to_path_buf();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        cur.push(c);
        if let Ok(m) = fs::symlink_metadata(&cur) {
            if m.file_type().is_symlink() {
                return true;
            }
        }
    }
    false
}

fn os_err(what: &Path, step: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {step}: {e}", what.display()))
}

/// Makes room for a non-directory at `full`: parents exist, an earlier
/// non-directory of the same name is replaced (as GNU tar does).
fn make_room(full: &Path, path: &Path) -> io::Result<()> {
    if let Some(parent) = full.parent() {
        fs::create_dir_all(parent).map_err(|e| os_err(parent, "creating folder", e))?;
    }
    match fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => Err(hostile(format!(
            "archive entry {} would replace a folder; refusing",
            path.display()
        ))),
        Ok(_) => fs::remove_file(full).map_err(|e| os_err(full, "replacing", e)),
        Err(_) => Ok(()),
    }
}

fn set_times(full: &Path, m: &Meta) -> io::Result<()> {
    let c = cpath(full)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: m.mtime as libc::time_t,
            tv_nsec: m.mtime_nsec as libc::c_long,
        },
    ];
    // SAFETY: a valid path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(os_err(full, "setting mtime", io::Error::last_os_error()));
    }
    Ok(())
}

fn set_xattr(full: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(full)?;
    let n = CString::new(name).map_err(|_| hostile("xattr name with a NUL byte".into()))?;
    // SAFETY: valid C strings and a value buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn resolve_name(user: bool, name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: zeroed structs filled by the _r lookups from our buffer.
    unsafe {
        if user {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut res = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                c.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut res,
            );
            (rc == 0 && !res.is_null()).then_some(pw.pw_uid)
        } else {
            let mut gr: libc::group = std::mem::zeroed();
            let mut res = std::ptr::null_mut();
            let rc = libc::getgrnam_r(
                c.as_ptr(),
                &mut gr,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut res,
            );
            (rc == 0 && !res.is_null()).then_some(gr.gr_gid)
        }
    }
}

/// What became of one archive member on restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Written, and counted in [`Unpacked::entries`].
    Restored,
    /// Not written; the reason is in [`Unpacked::skipped`].
    Skipped,
}

struct Restorer<'a> {
    dest: &'a Path,
    out: Unpacked,
    owner_warned: bool,
    /// Folders get their attributes and mtime after their content, as tar does.
    dirs: Vec<(PathBuf, Meta)>,
}

impl Restorer<'_> {
    /// Owner, mode, extended attributes and ACLs, in the order that keeps
    /// each: chown clears set-id bits and capabilities, so it goes first.
    fn attributes(&mut self, full: &Path, m: &Meta, mode: bool) -> io::Result<()> {
        let ids = (u32::try_from(m.uid), u32::try_from(m.gid));
        match ids {
            (Ok(uid), Ok(gid)) => {
                if let Err(e) = std::os::unix::fs::lchown(full, Some(uid), Some(gid)) {
                    if e.raw_os_error() == Some(libc::EPERM) {
                        if !self.owner_warned {
                            self.owner_warned = true;
                            // SAFETY: geteuid cannot fail.
                            let me = unsafe { libc::geteuid() };
                            self.out.warnings.push(format!(
                                "ownership not restored: running as uid {me}, not root; restored files belong to uid {me} (first: {} wanted {uid}:{gid})",
                                full.display()
                            ));
                        }
                    } else {
                        return Err(os_err(full, "setting owner", e));
                    }
                }
            }
            _ => self.out.warnings.push(format!(
                "{}: owner {}:{} does not fit this system; not restored",
                full.display(),
                m.uid,
                m.gid
            )),
        }
        if mode {
            fs::set_permissions(full, fs::Permissions::from_mode(m.mode & 0o7777))
                .map_err(|e| os_err(full, "setting mode", e))?;
        }
        let mut has = (false, false);
        for (k, v) in &m.xattrs {
            has.0 |= k == b"system.posix_acl_access";
            has.1 |= k == b"system.posix_acl_default";
            if let Err(e) = set_xattr(full, k, v) {
                self.out.warnings.push(format!(
                    "{}: extended attribute {} not restored: {e}",
                    full.display(),
                    String::from_utf8_lossy(k)
                ));
            }
        }
        // Archives from GNU tar without the binary form: the text ACLs.
        for (text, name, done) in [
            (&m.acl_access, "system.posix_acl_access", has.0),
            (&m.acl_default, "system.posix_acl_default", has.1),
        ] {
            let Some(text) = text.as_ref().filter(|_| !done) else {
                continue;
            };
            let res = pax::acl_from_text(text, resolve_name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                .and_then(|bin| set_xattr(full, name.as_bytes(), &bin));
            if let Err(e) = res {
                self.out
                    .warnings
                    .push(format!("{}: ACL {name} not restored: {e}", full.display()));
            }
        }
        Ok(())
    }

    /// Restores one archive member: check its names, then write it.
    fn entry(
        &mut self,
        ar: &mut TarReader<impl Read>,
        m: Meta,
        external_links: bool,
    ) -> io::Result<()> {
        let path = PathBuf::from(OsString::from_vec(m.path.clone()));
        let Some(rel) = inside(&path) else {
            return Err(hostile(format!(
                "archive entry {} has an absolute or .. path; refusing",
                path.display()
            )));
        };
        let link = PathBuf::from(OsString::from_vec(m.link.clone()));
        self.check_link(&m, &path, &rel, &link, external_links)?;
        if through_symlink(self.dest, &rel) {
            return Err(hostile(format!(
                "archive entry {} would be written through a symlink; refusing",
                path.display()
            )));
        }
        let full = self.dest.join(&rel);
        let outcome = match m.kind {
            pax::DIRECTORY => self.restore_dir(full, m)?,
            k if m.is_regular() || k == b'7' => self.restore_file(ar, &full, &path, &m)?,
            pax::HARDLINK => self.restore_hard_link(&full, &path, &link)?,
            pax::SYMLINK => self.restore_symlink(&full, &path, &link, &m)?,
            pax::FIFO | pax::CHAR | pax::BLOCKDEV => self.restore_special(&full, &path, &m)?,
            other => {
                self.out.skipped.push(format!(
                    "{} (tar entry type {:?}) skipped: cexdr does not restore this kind of entry",
                    path.display(),
                    other as char
                ));
                Outcome::Skipped
            }
        };
        if outcome == Outcome::Restored {
            self.out.entries += 1;
        }
        Ok(())
    }

    /// Refuses a symlink or hard link without a target or one that leads
    /// outside the restore target.
    fn check_link(
        &self,
        m: &Meta,
        path: &Path,
        rel: &Path,
        link: &Path,
        external_links: bool,
    ) -> io::Result<()> {
        match m.kind {
            pax::SYMLINK => {
                if m.link.is_empty() {
                    return Err(hostile(format!("symlink {} has no target", path.display())));
                }
                let base = rel.parent().unwrap_or(Path::new(""));
                if !external_links && (link.is_absolute() || normalise(&base.join(link)).is_none())
                {
                    return Err(hostile(format!(
                        "symlink {} -> {} points outside the restore target; refusing (--allow-external-links restores it as a link)",
                        path.display(),
                        link.display()
                    )));
                }
            }
            pax::HARDLINK => {
                if m.link.is_empty() {
                    return Err(hostile(format!(
                        "hard link {} has no target",
                        path.display()
                    )));
                }
                let target = inside(link).filter(|t| !through_symlink(self.dest, &t.join("x")));
                if target.is_none() {
                    return Err(hostile(format!(
                        "hard link {} -> {} points outside the restore target; refusing",
                        path.display(),
                        link.display()
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Creates (or keeps) the folder; its attributes wait for its content.
    fn restore_dir(&mut self, full: PathBuf, m: Meta) -> io::Result<Outcome> {
        match fs::symlink_metadata(&full) {
            Ok(e) if e.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&full).map_err(|e| os_err(&full, "replacing", e))?;
                fs::create_dir(&full).map_err(|e| os_err(&full, "creating folder", e))?;
            }
            Err(_) => fs::create_dir_all(&full).map_err(|e| os_err(&full, "creating folder", e))?,
        }
        // Attributes after the content, as GNU tar does: a default
        // ACL set now would be inherited by every child restored.
        self.dirs.push((full, m));
        Ok(Outcome::Restored)
    }

    /// Writes a regular file's data (holes kept), then its attributes.
    fn restore_file(
        &mut self,
        ar: &mut TarReader<impl Read>,
        full: &Path,
        path: &Path,
        m: &Meta,
    ) -> io::Result<Outcome> {
        make_room(full, path)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(full)
            .map_err(|e| os_err(full, "creating", e))?;
        if let Some(sp) = &m.sparse {
            // Seeking past the end leaves holes: the file is as sparse as the original.
            for &(off, len) in &sp.map {
                f.seek(SeekFrom::Start(off))?;
                let n = io::copy(&mut (&mut *ar).take(len), &mut f)
                    .map_err(|e| os_err(full, "writing", e))?;
                if n != len {
                    return Err(hostile(format!(
                        "{}: sparse data ends early",
                        path.display()
                    )));
                }
            }
            f.set_len(sp.realsize)
                .map_err(|e| os_err(full, "setting size", e))?;
        } else {
            io::copy(ar, &mut f).map_err(|e| os_err(full, "writing", e))?;
        }
        drop(f);
        self.attributes(full, m, true)?;
        set_times(full, m)?;
        Ok(Outcome::Restored)
    }

    /// Links to the earlier entry (checked to be inside the target).
    fn restore_hard_link(&mut self, full: &Path, path: &Path, link: &Path) -> io::Result<Outcome> {
        make_room(full, path)?;
        let target = self.dest.join(inside(link).expect("checked above"));
        fs::hard_link(&target, full)
            .map_err(|e| os_err(full, &format!("linking to {}", link.display()), e))?;
        Ok(Outcome::Restored)
    }

    /// Creates the symlink (never followed), then its own attributes.
    fn restore_symlink(
        &mut self,
        full: &Path,
        path: &Path,
        link: &Path,
        m: &Meta,
    ) -> io::Result<Outcome> {
        make_room(full, path)?;
        std::os::unix::fs::symlink(link, full).map_err(|e| os_err(full, "creating symlink", e))?;
        self.attributes(full, m, false)?;
        set_times(full, m)?;
        Ok(Outcome::Restored)
    }

    /// Creates a FIFO or device node; one the system refuses is skipped.
    fn restore_special(&mut self, full: &Path, path: &Path, m: &Meta) -> io::Result<Outcome> {
        make_room(full, path)?;
        let (fmt, what) = match m.kind {
            pax::FIFO => (libc::S_IFIFO, "fifo"),
            pax::CHAR => (libc::S_IFCHR, "character device"),
            _ => (libc::S_IFBLK, "block device"),
        };
        let c = cpath(full)?;
        let dev = libc::makedev(m.devmajor, m.devminor);
        // SAFETY: a valid path; mode and device numbers are plain integers.
        let rc = unsafe {
            libc::mknod(
                c.as_ptr(),
                fmt | 0o600,
                if m.kind == pax::FIFO { 0 } else { dev },
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            self.out
                .skipped
                .push(format!("{} ({what}) not restored: {e}", path.display()));
            return Ok(Outcome::Skipped);
        }
        self.attributes(full, m, true)?;
        set_times(full, m)?;
        Ok(Outcome::Restored)
    }
}

/// Unpacks a tar stream into `dest` (which must exist), refusing anything
/// that could write outside it: absolute paths, `..`, hard links that
/// escape (or reach through a symlink), writes through a symlink, and
/// (unless `external_links`) symlinks that point outside.
///
/// Keeps what `tar --xattrs --acls -xpS --numeric-owner` keeps: numeric
/// owner and group (when permitted), modes, nanosecond mtimes, hard links,
/// holes, FIFOs and device nodes (as root), extended attributes and ACLs.
pub fn unpack_safe(r: impl Read, dest: &Path, external_links: bool) -> io::Result<Unpacked> {
    let mut ar = TarReader::new(r);
    let mut rs = Restorer {
        dest,
        out: Unpacked::default(),
        owner_warned: false,
        dirs: Vec::new(),
    };
    while let Some(m) = ar.next_entry()? {
        rs.entry(&mut ar, m, external_links)?;
    }
    for (dir, m) in std::mem::take(&mut rs.dirs).into_iter().rev() {
        rs.attributes(&dir, &m, true)?;
        set_times(&dir, &m)?;
    }
    // Read to the end so the caller's checksum covers every stored byte.
    io::copy(&mut ar.into_inner(), &mut io::sink())?;
    Ok(rs.out)
}

/// Walks a tar stream to its end: structure and sizes, nothing written.
pub async fn validate(stream: ByteStream) -> Result<(u64, Vec<String>)> {
    tokio::task::spawn_blocking(move || -> Result<(u64, Vec<String>)> {
        let mut counted = CountingReader {
            inner: pipeline::blocking_reader(stream),
            n: 0,
        };
        let mut entries = 0u64;
        {
            let mut ar = TarReader::new(&mut counted);
            while let Some(_m) = ar.next_entry().map_err(|e| Error::io("reading tar", e))? {
                io::copy(&mut ar, &mut io::sink())
                    .map_err(|e| Error::io("reading tar entry", e))?;
                entries += 1;
            }
        }
        io::copy(&mut counted, &mut io::sink()).map_err(|e| Error::io("reading tar", e))?;
        Ok((
            counted.n,
            vec![format!("tar structure read: {entries} entries")],
        ))
    })
    .await
    .map_err(|e| Error::source_from("tar", e))?
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_names_paths_and_dirs() {
        let ex =
            Excludes::new(&["*.swp".into(), "cache/".into(), "sub/secret.key".into()]).unwrap();
        assert!(ex.excluded(Path::new("a/b.swp"), false));
        assert!(ex.excluded(Path::new("x/cache"), true));
        assert!(!ex.excluded(Path::new("x/cache"), false));
        assert!(ex.excluded(Path::new("sub/secret.key"), false));
        assert!(!ex.excluded(Path::new("a/b.conf"), false));
    }

    #[test]
    fn normalise_refuses_climbing_out() {
        assert_eq!(
            normalise(Path::new("a/./b/../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(normalise(Path::new("a/../../c")), None);
        assert_eq!(normalise(Path::new("/etc")), None);
    }

    #[test]
    fn exact_reader_pads_and_truncates() {
        let mut r = ExactReader {
            inner: &b"abc"[..],
            left: 5,
            short: false,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert!(r.short);
        let mut r = ExactReader {
            inner: &b"abcdef"[..],
            left: 2,
            short: false,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
    }
}
