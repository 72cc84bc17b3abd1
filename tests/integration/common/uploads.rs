//! S3 multipart uploads on the emulator: what a failed or interrupted
//! upload must not leave behind.
use aws_sdk_s3::types::MultipartUpload;

/// The multipart uploads in flight in `bucket` (all prefixes).
pub async fn multipart_uploads(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<MultipartUpload> {
    client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list multipart uploads")
        .uploads()
        .to_vec()
}

/// Asserts that no multipart upload is left in `bucket`; `what` starts the
/// failure message (the uploads follow).
pub async fn assert_no_multipart_upload(client: &aws_sdk_s3::Client, bucket: &str, what: &str) {
    let up = multipart_uploads(client, bucket).await;
    assert!(up.is_empty(), "{what}: {up:?}");
}
