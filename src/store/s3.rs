//! S3 and S3-compatible stores (MinIO, emulators). Large objects go up as a
//! streaming multipart upload with bounded memory (`upload-concurrency`
//! parts in flight), aborted on any error; small ones as one PutObject.
//! Retries with backoff (throttling, 5xx, resets) are the SDK's standard
//! retry mode; credentials come from the standard AWS chain only.
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectLockMode, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::object::{check_key, ByteStream, ObjectLock, ObjectMeta, PendingUpload, Store};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq)]
pub struct S3Spec {
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    pub part_size: u64,
    pub upload_concurrency: usize,
    pub object_lock: Option<ObjectLock>,
}

/// S3 allows at most 10,000 parts of at most 5 GiB.
const MAX_PART: u64 = 5 << 30;

pub struct S3Store {
    client: Client,
    spec: S3Spec,
}

/// Aborts a multipart upload if the upload future is dropped before it
/// finished or aborted explicitly.
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let (Some(id), Ok(rt)) = (self.upload_id.take(), tokio::runtime::Handle::try_current()) {
            let req = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(id);
            rt.spawn(async move {
                let _ = req.send().await;
            });
        }
    }
}

/// Part `n` (1-based) size: doubles every 1,000 parts so that 10,000 parts
/// are never exceeded for any input (8 MiB base covers about 8 PiB).
pub fn part_size(base: u64, n: u32) -> u64 {
    let shift = ((n.saturating_sub(1)) / 1000).min(20);
    (base << shift).min(MAX_PART)
}

fn sdk_msg<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_owned(),
                _ => DisplayErrorContext(e).to_string(),
            }
        }
        _ => DisplayErrorContext(e).to_string(),
    }
}

fn status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Storage class, SSE and Object Lock on a PutObject or
/// CreateMultipartUpload request (two builder types with the same setters).
macro_rules! put_options {
    ($store:expr, $req:expr) => {{
        let mut req = $req;
        if let Some(sc) = &$store.spec.storage_class {
            req = req.storage_class(StorageClass::from(sc.as_str()));
        }
        if let Some(sse) = &$store.spec.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        if let Some(k) = &$store.spec.kms_key_id {
            req = req.ssekms_key_id(k);
        }
        if let Some((mode, until)) = $store.lock() {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        req
    }};
}

impl S3Store {
    /// Retention for a new object: now + the configured days.
    fn lock(&self) -> Option<(ObjectLockMode, aws_smithy_types::DateTime)> {
        self.spec.object_lock.as_ref().map(|l| {
            let until = chrono::Utc::now() + chrono::Duration::days(l.days as i64);
            (
                ObjectLockMode::from(l.mode.as_str()),
                aws_smithy_types::DateTime::from_secs(until.timestamp()),
            )
        })
    }

    /// Whether the bucket has Object Lock enabled (for `policy check`).
    pub async fn object_lock_enabled(&self) -> Result<bool> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.spec.bucket)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .map(|e| e.as_str() == "Enabled")
                .unwrap_or(false)),
            Err(e)
                if matches!(status(&e), Some(404))
                    || sdk_msg(&e).contains("ObjectLockConfigurationNotFound") =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err("check", "(bucket)", sdk_msg(&e))),
        }
    }

    pub async fn connect(spec: S3Spec) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(spec.region.clone()))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(6)
                    .with_initial_backoff(Duration::from_millis(200)),
            );
        if let Some(ep) = &spec.endpoint {
            loader = loader.endpoint_url(ep);
        }
        let conf = loader.load().await;
        let s3conf = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(spec.path_style)
            .build();
        Ok(S3Store {
            client: Client::from_conf(s3conf),
            spec,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.spec.bucket
    }

    /// The full object key in the bucket.
    pub fn full_key(&self, key: &str) -> String {
        if self.spec.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.spec.prefix)
        }
    }

    fn err(&self, op: &'static str, key: &str, msg: impl Into<String>) -> Error {
        Error::Store {
            store: self.describe(),
            op,
            key: key.into(),
            msg: msg.into(),
        }
    }

    /// Reads from `body` until at least `want` bytes or the end of the stream.
    async fn fill(
        &self,
        key: &str,
        body: &mut ByteStream,
        carry: &mut BytesMut,
        want: u64,
    ) -> Result<(Bytes, bool)> {
        while (carry.len() as u64) < want {
            match body.next().await {
                Some(Ok(chunk)) => carry.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(match Error::from_io(e) {
                        Ok(typed) => typed,
                        Err(e) => self.err("put", key, format!("reading input: {e}")),
                    })
                }
                None => return Ok((carry.split().freeze(), true)),
            }
        }
        let take = (want as usize).min(carry.len());
        Ok((carry.split_to(take).freeze(), false))
    }

    async fn put_multipart(
        &self,
        key: &str,
        full: &str,
        first: Bytes,
        body: &mut ByteStream,
        carry: &mut BytesMut,
    ) -> Result<u64> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.spec.bucket)
            .key(full);
        let req = put_options!(self, req);
        let created = req
            .send()
            .await
            .map_err(|e| self.err("put", key, sdk_msg(&e)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| self.err("put", key, "CreateMultipartUpload returned no upload id"))?
            .to_owned();
        let mut guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.spec.bucket.clone(),
            key: full.to_owned(),
            upload_id: Some(upload_id.clone()),
        };
        let result = self
            .upload_parts(key, full, &upload_id, first, body, carry)
            .await;
        let outcome = match result {
            Ok((parts, total)) => {
                let done = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.spec.bucket)
                    .key(full)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                done.map(|_| total)
                    .map_err(|e| self.err("put", key, sdk_msg(&e)))
            }
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            // Abort now (not only from the guard) so the caller returns after it.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.spec.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        guard.upload_id = None;
        outcome
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut ByteStream,
        carry: &mut BytesMut,
    ) -> Result<(Vec<CompletedPart>, u64)> {
        let mut in_flight = FuturesUnordered::new();
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut next: Option<Bytes> = Some(first);
        let mut n: u32 = 0;
        let mut eof = false;
        loop {
            let data = match next.take() {
                Some(d) => d,
                None if eof => break,
                None => {
                    let (d, e) = self
                        .fill(key, body, carry, part_size(self.spec.part_size, n + 1))
                        .await?;
                    eof = e;
                    if d.is_empty() {
                        break;
                    }
                    d
                }
            };
            n += 1;
            if n > 10_000 {
                return Err(self.err("put", key, "more than 10,000 parts"));
            }
            total += data.len() as u64;
            let req = self
                .client
                .upload_part()
                .bucket(&self.spec.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(n as i32)
                .body(SdkBody::from(data));
            let part_no = n as i32;
            in_flight.push(async move { (part_no, req.send().await) });
            while in_flight.len() >= self.spec.upload_concurrency {
                self.collect_part(key, &mut in_flight, &mut parts).await?;
            }
        }
        while !in_flight.is_empty() {
            self.collect_part(key, &mut in_flight, &mut parts).await?;
        }
        parts.sort_by_key(|p| p.part_number());
        Ok((parts, total))
    }

    async fn collect_part<F, E>(
        &self,
        key: &str,
        in_flight: &mut FuturesUnordered<F>,
        parts: &mut Vec<CompletedPart>,
    ) -> Result<()>
    where
        F: std::future::Future<
            Output = (
                i32,
                std::result::Result<
                    aws_sdk_s3::operation::upload_part::UploadPartOutput,
                    SdkError<E, HttpResponse>,
                >,
            ),
        >,
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        if let Some((no, res)) = in_flight.next().await {
            let out =
                res.map_err(|e| self.err("put", key, format!("part {no}: {}", sdk_msg(&e))))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .part_number(no)
                    .build(),
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Store for S3Store {
    async fn object_lock_enabled(&self) -> Result<Option<bool>> {
        S3Store::object_lock_enabled(self).await.map(Some)
    }

    fn describe(&self) -> String {
        if self.spec.prefix.is_empty() {
            format!("s3://{}", self.spec.bucket)
        } else {
            format!("s3://{}/{}", self.spec.bucket, self.spec.prefix)
        }
    }

    async fn preflight(&self) -> Result<()> {
        match self
            .client
            .head_bucket()
            .bucket(&self.spec.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let msg = match status(&e) {
                    Some(404) => format!("bucket {} does not exist", self.spec.bucket),
                    Some(403) => format!(
                        "access to bucket {} denied (check the AWS credentials)",
                        self.spec.bucket
                    ),
                    _ => sdk_msg(&e),
                };
                Err(self.err("open", "(bucket)", msg))
            }
        }
    }

    async fn put(&self, key: &str, mut body: ByteStream) -> Result<u64> {
        check_key(key)?;
        let full = self.full_key(key);
        let mut carry = BytesMut::new();
        let (first, eof) = self
            .fill(
                key,
                &mut body,
                &mut carry,
                part_size(self.spec.part_size, 1),
            )
            .await?;
        if !eof {
            return self
                .put_multipart(key, &full, first, &mut body, &mut carry)
                .await;
        }
        let n = first.len() as u64;
        let req = self
            .client
            .put_object()
            .bucket(&self.spec.bucket)
            .key(&full)
            .body(SdkBody::from(first));
        let req = put_options!(self, req);
        req.send()
            .await
            .map_err(|e| self.err("put", key, sdk_msg(&e)))?;
        Ok(n)
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool> {
        check_key(key)?;
        let full = self.full_key(key);
        let res = self
            .client
            .put_object()
            .bucket(&self.spec.bucket)
            .key(&full)
            .if_none_match("*")
            .body(SdkBody::from(body))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(412) => Ok(false),
            Err(e) => Err(self.err("put", key, sdk_msg(&e))),
        }
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.spec.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.err("get", key, sdk_msg(&e)))?;
        let reader = out.body.into_async_read();
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            reader,
            1 << 20,
        )))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full_prefix = if self.spec.prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{prefix}", self.spec.prefix)
        };
        let strip = if self.spec.prefix.is_empty() {
            0
        } else {
            self.spec.prefix.len() + 1
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.spec.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("list", prefix, sdk_msg(&e)))?;
            for obj in page.contents() {
                if let Some(k) = obj.key() {
                    out.push(ObjectMeta {
                        key: k[strip..].to_owned(),
                        size: obj.size().unwrap_or(0) as u64,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let full = self.full_key(key);
        let mut req = self
            .client
            .delete_object()
            .bucket(&self.spec.bucket)
            .key(&full);
        let mut until = None;
        if self.spec.object_lock.is_some() {
            // A locked bucket is versioned: a plain delete would only hide the
            // object behind a delete marker. Delete the version itself, which
            // Object Lock refuses while it is retained.
            match self
                .client
                .head_object()
                .bucket(&self.spec.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(h) => {
                    if let Some(v) = h.version_id() {
                        req = req.version_id(v);
                    }
                    until = h.object_lock_retain_until_date().map(|d| d.to_string());
                }
                Err(e) if status(&e) == Some(404) => return Ok(()),
                Err(e) => return Err(self.err("delete", key, sdk_msg(&e))),
            }
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(403) && self.spec.object_lock.is_some() => {
                Err(Error::ObjectLocked {
                    store: self.describe(),
                    key: key.into(),
                    until: until.unwrap_or_else(|| "its retention date".into()),
                })
            }
            Err(e) if status(&e) == Some(403) => {
                // A bucket locked behind the policy's back: a refusal is a
                // lock only if the object has a retention date ahead.
                let msg = sdk_msg(&e);
                match self.locked_until(key).await {
                    Ok(Some(t)) if t > chrono::Utc::now() => Err(Error::ObjectLocked {
                        store: self.describe(),
                        key: key.into(),
                        until: t.to_rfc3339(),
                    }),
                    _ => Err(self.err("delete", key, msg)),
                }
            }
            Err(e) => Err(self.err("delete", key, sdk_msg(&e))),
        }
    }

    fn put_attributes(&self) -> serde_json::Value {
        let mut v = serde_json::Map::new();
        if let Some(sse) = &self.spec.sse {
            v.insert("sse".into(), sse.clone().into());
        }
        if let Some(k) = &self.spec.kms_key_id {
            v.insert("kms_key_id".into(), k.clone().into());
        }
        if let Some(c) = &self.spec.storage_class {
            v.insert("storage_class".into(), c.clone().into());
        }
        if let Some(l) = &self.spec.object_lock {
            v.insert(
                "object_lock".into(),
                serde_json::json!({"mode": l.mode, "days": l.days}),
            );
        }
        if v.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::Object(v)
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        check_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.spec.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.into(),
                size: out.content_length().unwrap_or(0) as u64,
            })),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("head", key, sdk_msg(&e))),
        }
    }

    async fn stale_uploads(
        &self,
        prefix: &str,
        before: DateTime<Utc>,
    ) -> Result<Vec<PendingUpload>> {
        let full_prefix = if self.spec.prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{prefix}", self.spec.prefix)
        };
        let strip = if self.spec.prefix.is_empty() {
            0
        } else {
            self.spec.prefix.len() + 1
        };
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.spec.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.err("list-uploads", prefix, sdk_msg(&e)))?;
            for u in page.uploads() {
                let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let initiated = u
                    .initiated()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()));
                // An upload of unknown age is left alone.
                if initiated.is_some_and(|t| t < before) && k.len() >= strip {
                    out.push(PendingUpload {
                        key: k[strip..].to_owned(),
                        upload_id: id.to_owned(),
                        initiated,
                    });
                }
            }
            if page.is_truncated() == Some(true) {
                key_marker = page.next_key_marker().map(str::to_owned);
                id_marker = page.next_upload_id_marker().map(str::to_owned);
                if key_marker.is_none() && id_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        Ok(out)
    }

    async fn abort_upload(&self, u: &PendingUpload) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.spec.bucket)
            .key(self.full_key(&u.key))
            .upload_id(&u.upload_id)
            .send()
            .await
            .map_err(|e| self.err("abort-upload", &u.key, sdk_msg(&e)))?;
        Ok(())
    }

    async fn locked_until(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        check_key(key)?;
        let out = self
            .client
            .head_object()
            .bucket(&self.spec.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.err("head", key, sdk_msg(&e)))?;
        Ok(out
            .object_lock_retain_until_date()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_never_need_more_than_10000_parts() {
        let base = 8 << 20;
        assert_eq!(part_size(base, 1), base);
        assert_eq!(part_size(base, 1000), base);
        assert_eq!(part_size(base, 1001), 2 * base);
        let total: u64 = (1..=10_000).map(|n| part_size(base, n)).sum();
        assert!(total > 5 << 40, "10,000 parts hold at least 5 TiB");
        assert!((1..=10_000).all(|n| part_size(base, n) <= MAX_PART));
    }
}
