//! The per-file list of a files backup: path, type, mode, owner, size,
//! SHA-256 and link target of every entry, read from the tar stream as it
//! goes to the store (so it describes exactly what was archived) and
//! recorded in the artifact's details as `file_list`. A restore test
//! compares a restored scratch tree with it.
//!
//! Kept apart from `files.rs` on purpose: it only reads the tar the files
//! source writes, whatever that source puts in it.
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Extract, Report};
use crate::backup::catalog::Manifest;
use crate::error::{Error, Result};

/// The artifact details key holding the list.
pub const KEY: &str = "file_list";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink`, or the tar type of anything else.
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target, or the path a hard link points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// Wraps the files extract: its stream is teed into a tar reader on a
/// blocking thread, and its report gains the list. Memory stays flat: the
/// tee is a bounded channel, so the reader paces the upload.
pub fn record(x: Extract) -> Extract {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let reader = tokio::task::spawn_blocking(move || {
        list_tar(ChannelReader {
            rx,
            cur: Bytes::new(),
        })
    });
    let stream = futures::stream::unfold((x.stream, Some(tx)), |(mut st, mut tx)| async move {
        match st.next().await {
            Some(Ok(b)) => {
                if let Some(t) = &tx {
                    if t.send(b.clone()).await.is_err() {
                        tx = None; // the reader gave up; its error is reported
                    }
                }
                Some((Ok(b), (st, tx)))
            }
            Some(Err(e)) => Some((Err(e), (st, None))),
            None => None, // drops the sender: the reader sees the end
        }
    })
    .boxed();
    let finish = x.finish;
    let finish = async move {
        let mut report: Report = finish.await?;
        match reader.await {
            Ok(Ok(list)) => {
                if let serde_json::Value::Object(d) = &mut report.details {
                    d.insert(
                        KEY.into(),
                        serde_json::to_value(list).expect("serialisable"),
                    );
                }
            }
            Ok(Err(e)) => report.warnings.push(format!(
                "no per-file list recorded (restore tests of this backup will fail): {e}"
            )),
            Err(e) => report.warnings.push(format!(
                "no per-file list recorded (restore tests of this backup will fail): {e}"
            )),
        }
        Ok(report)
    }
    .boxed();
    Extract {
        name: x.name,
        stream,
        finish,
    }
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

fn list_tar(r: impl Read) -> io::Result<Vec<FileRecord>> {
    use super::pax;
    let mut ar = pax::TarReader::new(r);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while let Some(m) = ar.next_entry()? {
        let path = String::from_utf8_lossy(&m.path)
            .trim_end_matches('/')
            .to_owned();
        let link = (!m.link.is_empty()).then(|| String::from_utf8_lossy(&m.link).into_owned());
        let kind = match m.kind {
            _ if m.is_regular() => "file".to_owned(),
            pax::DIRECTORY => "dir".into(),
            pax::SYMLINK => "symlink".into(),
            pax::HARDLINK => "hardlink".into(),
            pax::FIFO => "fifo".into(),
            pax::CHAR => "char-device".into(),
            pax::BLOCKDEV => "block-device".into(),
            // Anything else is named, not guessed.
            other => format!("tar type {:?}", other as char),
        };
        let (size, sha256) = if kind == "file" {
            // The restored file's bytes: a sparse member's holes are zeros.
            let mut h = Sha256::new();
            let mut pos = 0u64;
            let zeros = |h: &mut Sha256, mut n: u64| {
                let z = [0u8; 8192];
                while n > 0 {
                    let k = n.min(z.len() as u64) as usize;
                    h.update(&z[..k]);
                    n -= k as u64;
                }
            };
            let regions = match &m.sparse {
                Some(s) => s.map.clone(),
                None => vec![(0, m.size)],
            };
            for (off, len) in regions {
                zeros(&mut h, off.saturating_sub(pos));
                let mut left = len;
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    ar.read_exact(&mut buf[..k])?;
                    h.update(&buf[..k]);
                    left -= k as u64;
                }
                pos = off + len;
            }
            let total = m.sparse.as_ref().map(|s| s.realsize).unwrap_or(m.size);
            zeros(&mut h, total.saturating_sub(pos));
            (Some(total), Some(hex::encode(h.finalize())))
        } else {
            io::copy(&mut ar, &mut io::sink())?;
            (None, None)
        };
        out.push(FileRecord {
            path,
            kind,
            mode: m.mode & 0o7777,
            uid: m.uid,
            gid: m.gid,
            size,
            sha256,
            link,
        });
    }
    io::copy(ar.into_inner().by_ref(), &mut io::sink())?;
    Ok(out)
}

/// The list recorded for a backup, if any.
pub fn recorded(m: &Manifest) -> Option<Vec<FileRecord>> {
    let v = m.artifacts.first()?.details.get(KEY)?;
    serde_json::from_value(v.clone()).ok()
}

fn sha256_file(p: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Compares a restored tree with the recorded list: every entry present
/// with its type, mode, SHA-256, link target and (when run as root, which
/// is when a restore can set owners) owner; nothing extra. Returns what was
/// compared and the differences.
pub fn compare(m: &Manifest, root: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let list = recorded(m).ok_or_else(|| {
        Error::RestoreRefused(format!(
            "backup {} records no per-file list to compare with (taken by a cexdr without one, or recording failed: see its warnings)",
            m.id
        ))
    })?;
    let mut c = Comparison {
        root,
        as_root: nix_euid_is_root(),
        bad: Vec::new(),
        files: 0,
        bytes: 0,
        specials: Vec::new(),
    };
    let mut seen = BTreeMap::new();
    for r in &list {
        seen.insert(r.path.clone(), ());
        c.entry(r);
    }
    c.extras(&list, seen);
    let mut checks = vec![format!(
        "{} entries compared with the list recorded at backup time ({} files, {} bytes: sha256, mode, link targets{})",
        list.len(),
        c.files,
        c.bytes,
        if c.as_root { ", owners" } else { "; owners not compared: not run as root" }
    )];
    if !c.specials.is_empty() {
        checks.push(format!(
            "not restored, not compared (special files): {}",
            c.specials.join(", ")
        ));
    }
    Ok((checks, c.bad))
}

/// A restored tree being compared with its recorded list.
struct Comparison<'a> {
    root: &'a Path,
    as_root: bool,
    /// The differences.
    bad: Vec<String>,
    files: u64,
    bytes: u64,
    /// Special files (not restored, so not compared).
    specials: Vec<String>,
}

impl Comparison<'_> {
    /// One recorded entry: its type, mode and owner, then its content.
    fn entry(&mut self, r: &FileRecord) {
        let p = self.root.join(&r.path);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) if !matches!(r.kind.as_str(), "file" | "dir" | "symlink" | "hardlink") => {
                self.specials.push(format!("{} ({})", r.path, r.kind));
                return;
            }
            Err(e) => {
                self.bad
                    .push(format!("{}: missing after the restore ({e})", r.path));
                return;
            }
        };
        let ft = meta.file_type();
        let got = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        let want = if r.kind == "hardlink" {
            "file"
        } else {
            r.kind.as_str()
        };
        if got != want {
            self.bad.push(format!(
                "{}: restored as {got}, recorded as {}",
                r.path, r.kind
            ));
            return;
        }
        if !ft.is_symlink() && meta.mode() & 0o7777 != r.mode {
            self.bad.push(format!(
                "{}: mode {:04o} restored, {:04o} recorded",
                r.path,
                meta.mode() & 0o7777,
                r.mode
            ));
        }
        if self.as_root && (meta.uid() as u64 != r.uid || meta.gid() as u64 != r.gid) {
            self.bad.push(format!(
                "{}: owner {}:{} restored, {}:{} recorded",
                r.path,
                meta.uid(),
                meta.gid(),
                r.uid,
                r.gid
            ));
        }
        self.content(r, &p, &meta);
    }

    /// A file's SHA-256, a symlink's target, a hard link's inode.
    fn content(&mut self, r: &FileRecord, p: &Path, meta: &std::fs::Metadata) {
        let bad = &mut self.bad;
        match r.kind.as_str() {
            "file" => {
                self.files += 1;
                self.bytes += meta.len();
                match sha256_file(p) {
                    Ok(sha) if Some(&sha) == r.sha256.as_ref() => {}
                    Ok(sha) => bad.push(format!(
                        "{}: sha256 {sha} restored, {} recorded",
                        r.path,
                        r.sha256.as_deref().unwrap_or("none")
                    )),
                    Err(e) => bad.push(format!("{}: cannot read it back: {e}", r.path)),
                }
            }
            "symlink" => {
                let t = std::fs::read_link(p)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if Some(&t) != r.link.as_ref() {
                    bad.push(format!(
                        "{}: link to {t:?} restored, {:?} recorded",
                        r.path,
                        r.link.as_deref().unwrap_or("")
                    ));
                }
            }
            "hardlink" => {
                let target = self.root.join(r.link.as_deref().unwrap_or(""));
                match std::fs::symlink_metadata(&target) {
                    Ok(t) if t.ino() == meta.ino() && t.dev() == meta.dev() => {}
                    _ => bad.push(format!(
                        "{}: not restored as a hard link to {}",
                        r.path,
                        r.link.as_deref().unwrap_or("")
                    )),
                }
            }
            _ => {}
        }
    }

    /// Anything restored that the list does not have (the folders above an
    /// archived path are made by the restore without being entries).
    fn extras(&mut self, list: &[FileRecord], mut seen: BTreeMap<String, ()>) {
        for r in list {
            let mut p = Path::new(&r.path).parent();
            while let Some(a) = p.filter(|a| !a.as_os_str().is_empty()) {
                seen.insert(a.to_string_lossy().into_owned(), ());
                p = a.parent();
            }
        }
        let mut extra = Vec::new();
        for e in walkdir(self.root) {
            let rel = e
                .strip_prefix(self.root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !rel.is_empty() && !seen.contains_key(&rel) {
                extra.push(rel);
            }
        }
        for x in extra {
            self.bad
                .push(format!("{x}: restored but not in the recorded list"));
        }
    }
}

fn walkdir(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

fn nix_euid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_a_tar_with_hashes_modes_and_links() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o750);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "etc/", io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o640);
        h.set_size(3);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "etc/a.conf", &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, "etc/l", "a.conf").unwrap();
        let data = b.into_inner().unwrap();
        let list = list_tar(&data[..]).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!((list[0].kind.as_str(), list[0].mode), ("dir", 0o750));
        assert_eq!(list[0].path, "etc");
        assert_eq!(
            list[1].sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(list[2].link.as_deref(), Some("a.conf"));
    }
}
