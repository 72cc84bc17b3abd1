//! A directory on a local (or mounted) filesystem. Writes go to a temporary
//! name in the same directory, are fsynced, renamed into place, and the
//! directory is fsynced (restic's `local.Save`). Files are 0600, dirs 0700.
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::object::{check_key, ByteStream, ObjectMeta, PendingUpload, Store, LOCAL_TEMP_FILE};
use crate::error::{Error, Result};

const TMP_MARK: &str = ".cexdr-tmp-";

pub struct LocalStore {
    root: PathBuf,
}

/// Removes a temporary file unless disarmed, also when the writing future is
/// dropped half-way (Ctrl-C, timeout).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn err(&self, op: &'static str, key: &str, e: impl std::fmt::Display) -> Error {
        Error::Store {
            store: self.describe(),
            op,
            key: key.into(),
            msg: e.to_string(),
        }
    }

    fn mkdirs(dir: &Path) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }

    fn temp_path(path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!(".{name}{TMP_MARK}{:016x}", rand::random::<u64>()))
    }

    fn open_new(path: &Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    }

    fn sync_dir(dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    async fn preflight(&self) -> Result<()> {
        let root = self.root.clone();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            LocalStore::mkdirs(&root)?;
            let probe = LocalStore::temp_path(&root.join("probe"));
            let f = LocalStore::open_new(&probe);
            let _ = std::fs::remove_file(&probe);
            f.map(drop)
        })
        .await
        .expect("preflight task");
        res.map_err(|e| {
            self.err(
                "write",
                "(root)",
                format!("store directory is not writable: {e}"),
            )
        })
    }

    async fn put(&self, key: &str, mut body: ByteStream) -> Result<u64> {
        let path = self.path(key)?;
        let dir = path.parent().expect("keys have a parent").to_path_buf();
        let tmp = LocalStore::temp_path(&path);
        let mut guard = TempGuard(Some(tmp.clone()));
        let open = {
            let (dir, tmp) = (dir.clone(), tmp.clone());
            tokio::task::spawn_blocking(move || {
                LocalStore::mkdirs(&dir)?;
                LocalStore::open_new(&tmp)
            })
            .await
            .expect("open task")
        };
        let file = open.map_err(|e| self.err("put", key, e))?;
        let mut file = tokio::fs::File::from_std(file);
        let mut n = 0u64;
        use tokio::io::AsyncWriteExt;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| match Error::from_io(e) {
                Ok(typed) => typed,
                Err(e) => self.err("put", key, format!("reading input: {e}")),
            })?;
            file.write_all(&chunk)
                .await
                .map_err(|e| self.err("put", key, e))?;
            n += chunk.len() as u64;
        }
        file.flush().await.map_err(|e| self.err("put", key, e))?;
        let file = file.into_std().await;
        let (p, t, d) = (path.clone(), tmp.clone(), dir.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            file.sync_all()?;
            drop(file);
            std::fs::rename(&t, &p)?;
            LocalStore::sync_dir(&d)
        })
        .await
        .expect("commit task")
        .map_err(|e| self.err("put", key, e))?;
        guard.0 = None;
        Ok(n)
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool> {
        let path = self.path(key)?;
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let dir = path.parent().expect("keys have a parent");
            LocalStore::mkdirs(dir)?;
            let tmp = LocalStore::temp_path(&path);
            let _guard = TempGuard(Some(tmp.clone()));
            let mut f = LocalStore::open_new(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            // link(2) fails with EEXIST if the key exists: an atomic create
            // that never shows a half-written object.
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    LocalStore::sync_dir(dir)?;
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
        .expect("put_if_absent task");
        res.map_err(|e| self.err("put", key, e))
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.err("get", key, e))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        Ok(Box::pin(stream))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let shown = prefix.to_owned();
        let prefix = prefix.to_owned();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<ObjectMeta>> {
            // Walk only below the deepest directory the prefix names.
            let start_rel = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let start = if start_rel.is_empty() {
                root.clone()
            } else {
                root.join(start_rel)
            };
            let mut out = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in rd {
                    let entry = entry?;
                    let ft = entry.file_type()?;
                    let path = entry.path();
                    let rel = path
                        .strip_prefix(&root)
                        .expect("below root")
                        .to_string_lossy()
                        .into_owned();
                    if ft.is_dir() {
                        if rel.starts_with(&prefix) || prefix.starts_with(&format!("{rel}/")) {
                            stack.push(path);
                        }
                    } else if ft.is_file() && rel.starts_with(&prefix) && !rel.contains(TMP_MARK) {
                        out.push(ObjectMeta {
                            key: rel,
                            size: entry.metadata()?.len(),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .expect("list task");
        res.map_err(|e| self.err("list", &shown, e))
    }

    async fn stale_uploads(
        &self,
        prefix: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<PendingUpload>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let shown = prefix.clone();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<PendingUpload>> {
            let mut out = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in rd {
                    let entry = entry?;
                    let ft = entry.file_type()?;
                    let path = entry.path();
                    let rel = path
                        .strip_prefix(&root)
                        .expect("below root")
                        .to_string_lossy()
                        .into_owned();
                    if ft.is_dir() {
                        if rel.starts_with(&prefix) || prefix.starts_with(&format!("{rel}/")) {
                            stack.push(path);
                        }
                        continue;
                    }
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !ft.is_file() || !name.contains(TMP_MARK) {
                        continue;
                    }
                    // The prefix applies to the key the file was becoming.
                    let target = match rel.rfind('/') {
                        Some(i) => format!("{}/{}", &rel[..i], name.trim_start_matches('.')),
                        None => name.trim_start_matches('.').to_owned(),
                    };
                    if !target.starts_with(&prefix) && !rel.starts_with(&prefix) {
                        continue;
                    }
                    let written: chrono::DateTime<chrono::Utc> =
                        entry.metadata()?.modified()?.into();
                    if written < before {
                        out.push(PendingUpload {
                            key: rel,
                            upload_id: LOCAL_TEMP_FILE.into(),
                            initiated: Some(written),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .expect("stale temp task");
        res.map_err(|e| self.err("list", &shown, e))
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        if upload.upload_id != LOCAL_TEMP_FILE || !upload.key.contains(TMP_MARK) {
            return Ok(());
        }
        self.delete(&upload.key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err("delete", key, e)),
        }
        // Tidy empty date/id directories up to the root; ignore failures.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.into(),
                size: m.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("head", key, e)),
        }
    }
}
