//! An in-memory store for unit tests of the layers above stores. It follows
//! the same contract (and runs the same conformance suite) as the real ones.
use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::object::{check_key, ByteStream, ObjectMeta, Store};
use crate::error::{Error, Result};

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
    fn err(op: &'static str, key: &str, msg: impl Into<String>) -> Error {
        Error::Store {
            store: "memory".into(),
            op,
            key: key.into(),
            msg: msg.into(),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn preflight(&self) -> Result<()> {
        Ok(())
    }
    async fn put(&self, key: &str, mut body: ByteStream) -> Result<u64> {
        check_key(key)?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| match Error::from_io(e) {
                Ok(typed) => typed,
                Err(e) => Self::err("put", key, e.to_string()),
            })?;
            buf.extend_from_slice(&chunk);
        }
        let n = buf.len() as u64;
        self.objects
            .lock()
            .unwrap()
            .insert(key.into(), buf.freeze());
        Ok(n)
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool> {
        check_key(key)?;
        let mut m = self.objects.lock().unwrap();
        if m.contains_key(key) {
            return Ok(false);
        }
        m.insert(key.into(), body);
        Ok(true)
    }
    async fn get(&self, key: &str) -> Result<ByteStream> {
        check_key(key)?;
        let data = self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| Self::err("get", key, "no such object"))?;
        Ok(Box::pin(futures::stream::once(async move { Ok(data) })))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }
    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        check_key(key)?;
        Ok(self.objects.lock().unwrap().get(key).map(|v| ObjectMeta {
            key: key.into(),
            size: v.len() as u64,
        }))
    }
}
