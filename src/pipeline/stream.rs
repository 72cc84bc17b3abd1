//! Byte-stream plumbing between blocking code and async streams: a sync
//! `Write` that feeds a stream, a sync `Read` over one, and in-memory
//! streams for small objects and tests.
use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::base::ByteStream;

/// What a producer reports when the store side of its stream ended first;
/// the store's own error then has the cause (backup::run prefers it).
pub const CONSUMER_GONE: &str = "the consumer of the stream went away";

/// A sync `Write` that forwards bytes into an async stream in chunks; for
/// blocking producers (tar, decoders) running on a blocking thread.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    chunk: usize,
}

impl ChannelWriter {
    /// The writer and the stream that yields what it writes.
    pub fn new(capacity: usize, chunk: usize) -> (ChannelWriter, ByteStream) {
        let (tx, rx) = mpsc::channel(capacity);
        let w = ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(chunk),
            chunk,
        };
        (w, Box::pin(tokio_stream_from(rx)))
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(data))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, CONSUMER_GONE))
    }

    /// Ends the stream with an error instead of a clean end.
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }

    /// A handle that can end the stream with an error after the writer
    /// itself was moved away (into a tar builder, say).
    pub fn failer(&self) -> Failer {
        Failer(self.tx.clone())
    }

    /// Flushes what is buffered; dropping the writer then ends the stream.
    pub fn finish(mut self) -> io::Result<()> {
        self.send()
    }
}

pub struct Failer(mpsc::Sender<io::Result<Bytes>>);

impl Failer {
    pub fn fail(self, e: io::Error) {
        let _ = self.0.blocking_send(Err(e));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.chunk {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Runs a blocking reader over an async stream: `f` gets a sync `Read`.
/// For decoders and parsers (tar, gzip) that only speak `std::io`.
pub fn blocking_reader(input: ByteStream) -> impl Read + Send {
    let reader = tokio_util::io::StreamReader::new(input);
    tokio_util::io::SyncIoBridge::new(reader)
}

/// A stream over an in-memory buffer (tests and small objects).
pub fn from_bytes(data: impl Into<Bytes>) -> ByteStream {
    let data: Bytes = data.into();
    Box::pin(futures::stream::once(async move { Ok(data) }))
}

/// Drains a stream into memory (tests and small objects only).
pub async fn collect(mut s: ByteStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}
