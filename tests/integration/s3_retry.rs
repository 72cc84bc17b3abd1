//! S3 retries: a small proxy in front of the emulator answers the first
//! requests of each kind with 503 SlowDown and 500, and resets one
//! connection; the upload still completes, and the object is intact.
use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cexdr::store::{self, s3::S3Store, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Some(buf)
}

/// Forwards one request per connection; injects faults by request number.
async fn proxy(upstream: String, faults: Arc<AtomicUsize>) -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let n = Arc::new(AtomicUsize::new(0));
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            let (up, n, faults) = (upstream.clone(), n.clone(), faults.clone());
            tokio::spawn(async move {
                let Some(req) = read_request(&mut c).await else {
                    return;
                };
                let i = n.fetch_add(1, Ordering::SeqCst);
                let is_part =
                    String::from_utf8_lossy(&req[..200.min(req.len())]).contains("partNumber=");
                if is_part && i % 3 == 0 {
                    faults.fetch_add(1, Ordering::SeqCst);
                    let body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                    let resp = format!("HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = c.write_all(resp.as_bytes()).await;
                    return;
                }
                if is_part && i % 3 == 1 && i < 12 {
                    // A connection reset in the middle of the exchange.
                    faults.fetch_add(1, Ordering::SeqCst);
                    // Linger 0 turns the close into a reset; a zero timeout never blocks.
                    #[allow(deprecated)]
                    let _ = c.set_linger(Some(std::time::Duration::from_secs(0)));
                    return;
                }
                let mut u = TcpStream::connect(up.as_str()).await.unwrap();
                // One request per upstream connection.
                let text = String::from_utf8_lossy(&req).into_owned();
                let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head = text[..head_end - 2].replace("Connection: keep-alive\r\n", "");
                u.write_all(head.as_bytes()).await.unwrap();
                u.write_all(b"Connection: close\r\n\r\n").await.unwrap();
                u.write_all(&req[head_end..]).await.unwrap();
                let mut resp = Vec::new();
                let _ = u.read_to_end(&mut resp).await;
                let _ = c.write_all(&resp).await;
            });
        }
    });
    (port, h)
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_upload_survives_throttling_and_resets() {
    let (_client, bucket) = common::s3_bucket("retry").await;
    let upstream = common::s3_endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let faults = Arc::new(AtomicUsize::new(0));
    let (port, task) = proxy(upstream, faults.clone()).await;
    let spec = common::s3_spec(&bucket, "", format!("http://127.0.0.1:{port}"));
    let s3 = S3Store::connect(spec).await.unwrap();
    let data: Vec<u8> = (0..(16 << 20)).map(|i: u32| (i % 241) as u8).collect();
    let n = s3
        .put("job/obj.bin", cexdr::pipeline::from_bytes(data.clone()))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(faults.load(Ordering::SeqCst) >= 2, "no fault was injected");
    let back = store::get_bytes(&s3, "job/obj.bin").await.unwrap();
    assert!(back == data, "object differs after retries");
    task.abort();
}
