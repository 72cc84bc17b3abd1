//! Config-folder backups: a standard tar stream of the listed folders
//! (gzip-compressed by the pipeline), and the guarded restore of one.
//!
//! Modes, mtimes and symlinks (as links, never followed) are kept. A file
//! that changes or vanishes while it is read becomes a manifest warning.
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::FutureExt;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{Extract, Opened, Report, Source};
use crate::base::ByteStream;
use crate::error::{Error, Result};
use crate::pipeline::{self, ChannelWriter};

#[derive(Debug, Clone, PartialEq)]
pub struct FilesSpec {
    pub paths: Vec<PathBuf>,
    pub exclude: Vec<String>,
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

struct Walker<'a> {
    builder: tar::Builder<ChannelWriter>,
    excludes: &'a Excludes,
    warnings: &'a Mutex<Vec<String>>,
    stats: Stats,
}

impl Walker<'_> {
    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.lock().unwrap().push(msg);
    }

    fn header(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        h.set_entry_type(kind);
        h
    }

    /// Archives `path` under the archive name `name`; `rel` is the path below
    /// the configured folder, for exclude rules.
    fn add(&mut self, path: &Path, name: &Path, rel: &Path) -> io::Result<()> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{} vanished before it was read", path.display()));
                return Ok(());
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let ft = meta.file_type();
        if !rel.as_os_str().is_empty() && self.excludes.excluded(rel, ft.is_dir()) {
            return Ok(());
        }
        if ft.is_dir() {
            let mut h = Self::header(&meta, tar::EntryType::Directory);
            h.set_size(0);
            self.builder.append_data(&mut h, name, io::empty())?;
            self.stats.dirs += 1;
            let mut children: Vec<_> = match fs::read_dir(path) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(format!("{} vanished while it was read", path.display()));
                    return Ok(());
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            };
            children.sort();
            for c in children {
                self.add(&path.join(&c), &name.join(&c), &rel.join(&c))?;
            }
        } else if ft.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(format!("{} vanished before it was read", path.display()));
                    return Ok(());
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            };
            let mut h = Self::header(&meta, tar::EntryType::Symlink);
            h.set_size(0);
            self.builder.append_link(&mut h, name, &target)?;
            self.stats.symlinks += 1;
        } else if ft.is_file() {
            let file = match fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(format!("{} vanished before it was read", path.display()));
                    return Ok(());
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            };
            let before = file.metadata()?;
            let mut h = Self::header(&before, tar::EntryType::Regular);
            let mut reader = ExactReader {
                inner: &file,
                left: before.len(),
                short: false,
            };
            self.builder.append_data(&mut h, name, &mut reader)?;
            let grew = (&file).read(&mut [0u8; 1]).map(|n| n > 0).unwrap_or(false);
            let after = file.metadata()?;
            if reader.short
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
            self.stats.files += 1;
            self.stats.file_bytes += before.len();
        } else {
            self.warn(format!(
                "{} is a special file (socket, fifo or device); skipped",
                path.display()
            ));
        }
        Ok(())
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
                Err(e) => return Err(Error::source_err(p.display().to_string(), e)),
            }
        }
        let excludes = Excludes::new(&self.spec.exclude)?;
        let (writer, stream) = ChannelWriter::new(8, 256 << 10);
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let (paths, w2, job) = (self.spec.paths.clone(), warnings.clone(), self.job.clone());
        let failer = writer.failer();
        let task = tokio::task::spawn_blocking(move || -> io::Result<Stats> {
            let res = (|| -> io::Result<Stats> {
                let mut builder = tar::Builder::new(writer);
                builder.follow_symlinks(false);
                let mut walker = Walker {
                    builder,
                    excludes: &excludes,
                    warnings: &w2,
                    stats: Stats::default(),
                };
                for p in &paths {
                    walker.add(p, &archive_root(p), Path::new(""))?;
                }
                let Walker { builder, stats, .. } = walker;
                builder.into_inner()?.finish()?;
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
                Ok(Err(e)) => return Err(Error::source_err(format!("job {job}"), e)),
                Err(e) => return Err(Error::source_err(format!("job {job}"), e)),
            };
            let warnings = std::mem::take(&mut *warnings.lock().unwrap());
            Ok(Report {
                details: serde_json::json!({
                    "files": stats.files,
                    "directories": stats.dirs,
                    "symlinks": stats.symlinks,
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
        })
    }
}

/// Walks a tar stream to its end: structure and sizes, nothing written.
pub async fn validate(stream: ByteStream) -> Result<(u64, Vec<String>)> {
    tokio::task::spawn_blocking(move || -> Result<(u64, Vec<String>)> {
        let mut counted = CountingReader {
            inner: pipeline::blocking_reader(stream),
            n: 0,
        };
        let entries = {
            let mut ar = tar::Archive::new(&mut counted);
            let mut entries = 0u64;
            for e in ar.entries().map_err(|e| Error::io("reading tar", e))? {
                let mut e = e.map_err(|e| Error::io("reading tar entry", e))?;
                io::copy(&mut e, &mut io::sink()).map_err(|e| Error::io("reading tar entry", e))?;
                entries += 1;
            }
            entries
        };
        io::copy(&mut counted, &mut io::sink()).map_err(|e| Error::io("reading tar", e))?;
        Ok((
            counted.n,
            vec![format!("tar structure read: {entries} entries")],
        ))
    })
    .await
    .map_err(|e| Error::source_err("tar", e))?
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
    pub skipped: Vec<String>,
}

/// Unpacks a tar stream into `dest` (which must exist), refusing anything
/// that could write outside it: absolute paths, `..`, hard links that
/// escape, writes through a symlink, and (unless `external_links`) symlinks
/// that point outside. Special files are skipped and reported.
pub fn unpack_safe(r: impl Read, dest: &Path, external_links: bool) -> io::Result<Unpacked> {
    let mut counted = CountingReader { inner: r, n: 0 };
    let mut out = Unpacked::default();
    {
        let mut ar = tar::Archive::new(&mut counted);
        ar.set_preserve_permissions(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(false);
        // Directory mtimes are set after their content, as tar does.
        let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
        for entry in ar.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            let rel = normalise(&path).filter(|p| {
                !p.as_os_str().is_empty() && !path.components().any(|c| c == Component::ParentDir)
            });
            let Some(rel) = rel else {
                return Err(hostile(format!(
                    "archive entry {} has an absolute or .. path; refusing",
                    path.display()
                )));
            };
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Regular
                | tar::EntryType::Directory
                | tar::EntryType::Continuous => {}
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()?
                        .ok_or_else(|| {
                            hostile(format!("symlink {} has no target", path.display()))
                        })?
                        .into_owned();
                    let base = rel.parent().unwrap_or(Path::new(""));
                    if !external_links
                        && (target.is_absolute() || normalise(&base.join(&target)).is_none())
                    {
                        return Err(hostile(format!(
                            "symlink {} -> {} points outside the restore target; refusing (--allow-external-links restores it as a link)",
                            path.display(),
                            target.display()
                        )));
                    }
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()?
                        .ok_or_else(|| {
                            hostile(format!("hard link {} has no target", path.display()))
                        })?
                        .into_owned();
                    if target.is_absolute()
                        || target.components().any(|c| c == Component::ParentDir)
                    {
                        return Err(hostile(format!(
                            "hard link {} -> {} points outside the restore target; refusing",
                            path.display(),
                            target.display()
                        )));
                    }
                }
                tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => continue,
                other => {
                    out.skipped.push(format!(
                        "{} ({other:?}) skipped: special files are not restored",
                        path.display()
                    ));
                    continue;
                }
            }
            // No parent of the entry may be a symlink (a link then a file
            // through it would write outside the target).
            let mut cur = dest.to_path_buf();
            for c in rel.parent().into_iter().flat_map(|p| p.components()) {
                cur.push(c);
                if let Ok(m) = fs::symlink_metadata(&cur) {
                    if m.file_type().is_symlink() {
                        return Err(hostile(format!(
                            "archive entry {} would be written through a symlink; refusing",
                            path.display()
                        )));
                    }
                }
            }
            if kind == tar::EntryType::Directory {
                if let Ok(mtime) = entry.header().mtime() {
                    dir_times.push((dest.join(&rel), mtime));
                }
            }
            if !entry.unpack_in(dest)? {
                return Err(hostile(format!(
                    "archive entry {} escapes the restore target; refusing",
                    path.display()
                )));
            }
            out.entries += 1;
        }
        for (dir, mtime) in dir_times.into_iter().rev() {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
            if let Ok(f) = fs::File::open(&dir) {
                let _ = f.set_modified(t);
            }
        }
    }
    // Read to the end so the caller's checksum covers every stored byte.
    io::copy(&mut counted, &mut io::sink())?;
    Ok(out)
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
