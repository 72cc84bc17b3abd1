//! The byte pipeline between a source and a store: count → compress → hash.
//! Every stage maps a `ByteStream` to a `ByteStream`, so an encryption stage
//! can be slotted in without touching sources or stores. Nothing holds more
//! than a few blocks in memory, whatever the size of the backup.
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

pub mod encrypt;
pub mod stream;
use crate::base::ByteStream;
pub use stream::{blocking_reader, collect, from_bytes, ChannelWriter, Failer, CONSUMER_GONE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Compression {
    pub fn name(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        }
    }
    pub fn suffix(&self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => ".gz",
            Compression::Zstd { .. } => ".zst",
        }
    }
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Compression::None,
            "gzip" => Compression::Gzip { level: 6 },
            "zstd" => Compression::Zstd { level: 3 },
            _ => return None,
        })
    }
}

/// In a manifest, a compression is its name (`gzip`, `zstd`, `none`): the
/// level only matters when writing. Another name does not parse, by name.
impl serde::Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Compression::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown compression {name:?} (this build reads gzip, zstd and none)"
            ))
        })
    }
}

/// Compression works on independent blocks of this size: each becomes one
/// gzip member (or zstd frame), so blocks compress in parallel and the
/// result is still one valid `.gz` / `.zst` file (as pigz does).
pub const BLOCK: usize = 1 << 20;

/// Byte counts and the SHA-256 of the bytes that passed a point.
#[derive(Default)]
pub struct Tally {
    bytes: AtomicU64,
    sha: Mutex<Sha256>,
}

impl Tally {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Hex SHA-256 of everything seen so far.
    pub fn sha256(&self) -> String {
        hex::encode(self.sha.lock().unwrap().clone().finalize())
    }
}

/// Counts bytes (and optionally hashes them) as they pass.
pub fn tally(input: ByteStream, hash: bool) -> (ByteStream, Arc<Tally>) {
    let t = Arc::new(Tally::default());
    let t2 = t.clone();
    let s = input.map(move |chunk| {
        if let Ok(c) = &chunk {
            t2.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
            if hash {
                t2.sha.lock().unwrap().update(c);
            }
        }
        chunk
    });
    (Box::pin(s), t)
}

/// Ends the stream with `Error::Interrupted` once `token` is cancelled, so
/// every stage downstream (a multipart upload, a temp file) cleans up.
pub fn cancellable(input: ByteStream, token: CancellationToken) -> ByteStream {
    let s = futures::stream::unfold(
        (input, token, false),
        |(mut input, token, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                biased;
                _ = token.cancelled() => Some((Err(Error::Interrupted.into_io()), (input, token, true))),
                item = input.next() => item.map(|i| (i, (input, token, false))),
            }
        },
    );
    Box::pin(s)
}

/// Regroups a stream into chunks of at least `size` bytes (the last may be shorter).
pub fn rechunk(input: ByteStream, size: usize) -> ByteStream {
    let s = futures::stream::unfold(
        (input, BytesMut::new(), false),
        move |(mut input, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                match input.next().await {
                    Some(Ok(c)) => {
                        buf.extend_from_slice(&c);
                        if buf.len() >= size {
                            let out = buf.split().freeze();
                            return Some((Ok(out), (input, buf, false)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (input, buf, true))),
                    None if buf.is_empty() => return None,
                    None => {
                        let out = buf.split().freeze();
                        return Some((Ok(out), (input, buf, true)));
                    }
                }
            }
        },
    );
    Box::pin(s)
}

fn compress_block(block: &[u8], c: Compression) -> io::Result<Bytes> {
    match c {
        Compression::None => Ok(Bytes::copy_from_slice(block)),
        Compression::Gzip { level } => {
            // The header's extra field carries the length of the member's
            // deflate data (filled in below), so a reader can find the next
            // member without inflating this one: members then inflate in
            // parallel.
            let mut enc = flate2::GzBuilder::new().extra(MEMBER_EXTRA.to_vec()).write(
                Vec::with_capacity(block.len() / 3 + 64),
                flate2::Compression::new(level),
            );
            enc.write_all(block)?;
            let mut member = enc.finish()?;
            debug_assert_eq!(member[3], 4, "FEXTRA only: the header is 20 bytes");
            let len = u32::try_from(member.len() - MEMBER_FRAME)
                .map_err(|_| io::Error::other("gzip member over 4 GiB"))?;
            member[MEMBER_LEN_AT..MEMBER_LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
            Ok(Bytes::from(member))
        }
        Compression::Zstd { level } => Ok(Bytes::from(zstd::bulk::compress(block, level)?)),
    }
}

/// The extra field of every gzip member cexdr writes (RFC 1952 2.3.1.1):
/// MiGz's (LinkedIn; also Python mgzip's since 0.2.2): subfield `MZ`, 4
/// bytes: the length of the member's deflate data, little-endian, as the
/// only subfield. gzip and every other reader skip it; MiGz and mgzip
/// readers and `decompress` use it to split the stream into members and
/// inflate several at once. (docs/architecture.md, "Compression".)
const MEMBER_EXTRA: [u8; 8] = [b'M', b'Z', 4, 0, 0, 0, 0, 0];
/// Where the length sits: after the 10-byte fixed header, XLEN (2), SI1
/// SI2 (2) and LEN (2).
const MEMBER_LEN_AT: usize = 16;
/// A member less its deflate data: the 20-byte header and the 8-byte
/// trailer (CRC-32, ISIZE).
const MEMBER_FRAME: usize = MEMBER_LEN_AT + 4 + 8;
/// The whole length of a member whose header says it: magic, deflate,
/// FEXTRA only (mtime, XFL and OS vary), XLEN 8 and one subfield of length
/// 4: `MZ` (the deflate data's length), or `cx` (the member's total length;
/// what cexdr wrote before it wrote `MZ`).
fn member_len(h: &[u8]) -> Option<usize> {
    if h.len() < MEMBER_LEN_AT + 4
        || h[..4] != [0x1f, 0x8b, 8, 4]
        || h[10..12] != [8, 0]
        || h[14..16] != [4, 0]
    {
        return None;
    }
    let v = u32::from_le_bytes(h[16..20].try_into().unwrap()) as usize;
    let n = match &h[12..14] {
        b"MZ" => v.checked_add(MEMBER_FRAME)?,
        b"cx" => v,
        _ => return None,
    };
    // A member is at least header + empty deflate block + trailer.
    (n >= MEMBER_FRAME + 2).then_some(n)
}

/// Compresses with `threads` blocks in flight, keeping their order.
pub fn compress(input: ByteStream, c: Compression, threads: usize) -> ByteStream {
    if c == Compression::None {
        return input;
    }
    let s = rechunk(input, BLOCK)
        .map(move |block| async move {
            let block = block?;
            tokio::task::spawn_blocking(move || compress_block(&block, c))
                .await
                .map_err(io::Error::other)?
        })
        .buffered(threads.max(1));
    Box::pin(s)
}

/// What came out of `Pipeline::build`: the stream for the store and the
/// tallies to read once the store has consumed it.
pub struct Staged {
    pub stream: ByteStream,
    pub source: Arc<Tally>,
    pub stored: Arc<Tally>,
}

/// source bytes → count → compress → [encrypt] → count + SHA-256 → store.
pub fn stage(
    input: ByteStream,
    c: Compression,
    threads: usize,
    recipients: Option<encrypt::Recipients>,
    cancel: CancellationToken,
) -> Staged {
    let input = cancellable(input, cancel);
    let (counted, source) = tally(input, false);
    let mut out = compress(counted, c, threads);
    if let Some(r) = recipients {
        out = encrypt::encrypt(out, r);
    }
    let (stream, stored) = tally(out, true);
    Staged {
        stream,
        source,
        stored,
    }
}

/// Decompresses a stored stream (all gzip members / zstd frames). cexdr's
/// own gzip members say their length and its zstd frames their content
/// size, so they decompress on every core (as pigz compresses); any other
/// stream is read by one decoder.
pub fn decompress(input: ByteStream, c: Compression) -> ByteStream {
    match c {
        Compression::Gzip { .. } => units(input, c, crate::base::parallelism()),
        Compression::Zstd { .. } => units(input, c, crate::base::parallelism()),
        Compression::None => input,
    }
}

/// The largest zstd frame decoded whole: cexdr writes frames of `BLOCK`
/// bytes; a foreign stream with bigger frames (`zstd` itself writes one
/// frame per file) goes through the streaming decoder, in bounded memory.
const MAX_FRAME: usize = 4 * BLOCK;

/// Where the first unit (gzip member, zstd frame) in `buf` ends, if `buf`
/// holds it whole; `Err(())` when the stream is not one cexdr wrote in
/// units, or a unit is too big to hold in memory.
fn unit_len(buf: &[u8], c: Compression) -> Result<Option<usize>, ()> {
    match c {
        Compression::Gzip { .. } => match member_len(buf) {
            Some(n) => Ok((buf.len() >= n).then_some(n)),
            None if buf.len() >= MEMBER_LEN_AT + 4 => Err(()),
            None => Ok(None),
        },
        Compression::Zstd { .. } => {
            // The header says the content size (cexdr's frames always do).
            match zstd::zstd_safe::get_frame_content_size(buf) {
                Ok(Some(n)) if n <= MAX_FRAME as u64 => {}
                Ok(_) => return Err(()),
                // Too short to say yet, or not a frame: the decoder decides.
                Err(_) if buf.len() < 18 => return Ok(None),
                Err(_) => return Err(()),
            }
            match zstd::zstd_safe::find_frame_compressed_size(buf) {
                Ok(n) => Ok(Some(n)),
                Err(_) if buf.len() <= MAX_FRAME + (64 << 10) => Ok(None),
                Err(_) => Err(()),
            }
        }
        Compression::None => Err(()),
    }
}

/// Splits the stream into whole units and decompresses `threads` of them
/// at once, in order; from the first unit that does not say its length
/// (an artifact of an older version, or gzip's or zstd's own), the rest
/// goes through one streaming decoder.
fn units(input: ByteStream, c: Compression, threads: usize) -> ByteStream {
    enum Next {
        Unit(Bytes),
        Rest(ByteStream),
    }
    let units = futures::stream::unfold(
        Some((input, BytesMut::new(), false)),
        move |state| async move {
            let (mut input, mut buf, started) = state?;
            loop {
                match unit_len(&buf, c) {
                    Ok(Some(n)) => {
                        let m = buf.split_to(n).freeze();
                        return Some((Ok(Next::Unit(m)), Some((input, buf, true))));
                    }
                    Ok(None) => {}
                    Err(()) => {
                        // Not one of ours: one decoder reads what is left.
                        let head = from_bytes(buf.freeze());
                        let rest: ByteStream = Box::pin(head.chain(input));
                        return Some((Ok(Next::Rest(rest)), None));
                    }
                }
                match input.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), None)),
                    None if buf.is_empty() && started => return None,
                    // A short tail: the decoder reports what is wrong with it.
                    None => {
                        let rest = from_bytes(buf.freeze());
                        return Some((Ok(Next::Rest(rest)), None));
                    }
                }
            }
        },
    );
    let s = units
        .map(move |next| async move {
            match next? {
                Next::Unit(m) => {
                    let out = tokio::task::spawn_blocking(move || decode_unit(&m, c))
                        .await
                        .map_err(io::Error::other)??;
                    Ok(futures::stream::once(async move { Ok(out) }).boxed())
                }
                Next::Rest(rest) => Ok(serial_decompress(rest, c)),
            }
        })
        .buffered(threads.max(1))
        .map(|r: io::Result<ByteStream>| match r {
            Ok(s) => s,
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten();
    Box::pin(s)
}

/// One whole unit, checked by its decoder (gzip: CRC-32 and length; zstd:
/// the content size, and the checksum when the frame has one), and nothing
/// after it.
fn decode_unit(m: &[u8], c: Compression) -> io::Result<Bytes> {
    match c {
        Compression::Gzip { .. } => {
            let mut d = flate2::bufread::GzDecoder::new(m);
            let mut out = Vec::with_capacity(BLOCK);
            d.read_to_end(&mut out)?;
            if !d.into_inner().is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "gzip member shorter than its header says",
                ));
            }
            Ok(Bytes::from(out))
        }
        Compression::Zstd { .. } => {
            let n = zstd::zstd_safe::get_frame_content_size(m)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "zstd frame without its content size",
                    )
                })?;
            let out = zstd::bulk::decompress(m, n as usize)?;
            if out.len() as u64 != n {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "zstd frame shorter than its header says",
                ));
            }
            Ok(Bytes::from(out))
        }
        Compression::None => Ok(Bytes::copy_from_slice(m)),
    }
}

fn serial_decompress(input: ByteStream, c: Compression) -> ByteStream {
    if c == Compression::None {
        return input;
    }
    let (mut w, out) = ChannelWriter::new(4, 256 << 10);
    tokio::task::spawn_blocking(move || {
        let r = blocking_reader(input);
        let res = match c {
            Compression::Gzip { .. } => io::copy(&mut flate2::read::MultiGzDecoder::new(r), &mut w),
            Compression::Zstd { .. } => {
                zstd::stream::read::Decoder::new(r).and_then(|mut d| io::copy(&mut d, &mut w))
            }
            Compression::None => unreachable!(),
        };
        match res {
            Ok(_) => {
                let _ = w.finish();
            }
            Err(e) => w.fail(e),
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i * 7 % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    fn chunks(data: &[u8], size: usize) -> ByteStream {
        let v: Vec<io::Result<Bytes>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(v))
    }

    /// What `tool -dc` (gzip, zstd) makes of `bytes`: our streams must read
    /// with the stock tools.
    fn stock_decode(tool: &str, bytes: Vec<u8>) -> Vec<u8> {
        let mut child = std::process::Command::new(tool)
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "{tool} -dc failed");
        out.stdout
    }

    #[tokio::test]
    async fn gzip_members_round_trip_and_match_the_tallies() {
        let data = sample(3 * BLOCK + 12345);
        for c in [
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
            Compression::None,
        ] {
            let staged = stage(chunks(&data, 70_000), c, 3, None, CancellationToken::new());
            let stored = collect(staged.stream).await.unwrap();
            assert_eq!(staged.source.bytes(), data.len() as u64);
            assert_eq!(staged.stored.bytes(), stored.len() as u64);
            assert_eq!(staged.stored.sha256(), hex::encode(Sha256::digest(&stored)));
            let back = collect(decompress(from_bytes(stored.clone()), c))
                .await
                .unwrap();
            assert_eq!(back, data, "{c:?}");
            if let Compression::Gzip { .. } = c {
                // The stock tool reads the multi-member file as one.
                assert_eq!(stock_decode("gzip", stored), data);
            }
        }
    }

    #[tokio::test]
    async fn cancel_ends_the_stream_with_interrupted() {
        let token = CancellationToken::new();
        let endless: ByteStream = Box::pin(futures::stream::repeat_with(|| {
            Ok(Bytes::from_static(b"x"))
        }));
        let mut s = cancellable(endless, token.clone());
        assert!(s.next().await.unwrap().is_ok());
        token.cancel();
        let err = s.next().await.unwrap().unwrap_err();
        assert!(matches!(Error::from_io(err), Ok(Error::Interrupted)));
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn corrupt_gzip_is_an_error() {
        let staged = stage(
            chunks(&sample(100_000), 9000),
            Compression::Gzip { level: 6 },
            1,
            None,
            CancellationToken::new(),
        );
        let mut stored = collect(staged.stream).await.unwrap();
        let mid = stored.len() / 2;
        stored[mid] ^= 0xff;
        assert!(collect(decompress(
            from_bytes(stored),
            Compression::Gzip { level: 6 }
        ))
        .await
        .is_err());
    }

    /// Members that say their length inflate in parallel; members from gzip
    /// or an older cexdr (no length) after them are still read, in order;
    /// a member cut short or a wrong length is an error, not fewer bytes.
    #[tokio::test(flavor = "multi_thread")]
    async fn members_with_and_without_their_length() {
        let data = sample(5 * BLOCK + 12_345);
        let gz = Compression::Gzip { level: 3 };
        let ours = collect(compress(chunks(&data, 70_000), gz, 2))
            .await
            .unwrap();
        assert!(member_len(&ours).unwrap() < ours.len(), "several members");
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        plain.write_all(b"and a plain member").unwrap();
        let plain = plain.finish().unwrap();
        assert_eq!(member_len(&plain), None);
        let mut mixed = ours.clone();
        mixed.extend_from_slice(&plain);
        mixed.extend_from_slice(&ours);
        let mut want = data.clone();
        want.extend_from_slice(b"and a plain member");
        want.extend_from_slice(&data);
        for stream in [chunks(&mixed, 4096), chunks(&mixed, 3 << 20)] {
            assert_eq!(collect(decompress(stream, gz)).await.unwrap(), want);
        }
        let got = collect(decompress(chunks(&plain, 5), gz)).await.unwrap();
        assert_eq!(got, b"and a plain member");
        // No bytes at all is not a gzip stream (as for gzip -d), as before.
        assert!(collect(decompress(from_bytes(Vec::new()), gz))
            .await
            .is_err());
        // Truncated inside a member, and a member whose length was altered.
        let cut = &ours[..ours.len() - 3];
        assert!(collect(decompress(chunks(cut, 4096), gz)).await.is_err());
        let mut bad = ours.clone();
        bad[MEMBER_LEN_AT] = bad[MEMBER_LEN_AT].wrapping_sub(1);
        assert!(collect(decompress(chunks(&bad, 4096), gz)).await.is_err());
        // gzip itself reads them (the extra field is skipped).
        assert_eq!(stock_decode("gzip", mixed), want);
    }

    /// A member as cexdr wrote them before `MZ`: subfield `cx`, the
    /// member's total length.
    fn cx_member(block: &[u8]) -> Vec<u8> {
        let mut enc = flate2::GzBuilder::new()
            .extra(vec![b'c', b'x', 4, 0, 0, 0, 0, 0])
            .write(Vec::new(), flate2::Compression::new(6));
        enc.write_all(block).unwrap();
        let mut m = enc.finish().unwrap();
        let len = (m.len() as u32).to_le_bytes();
        m[MEMBER_LEN_AT..MEMBER_LEN_AT + 4].copy_from_slice(&len);
        m
    }

    /// Our members follow MiGz: `MZ` with the deflate data's length; old
    /// artifacts (`cx`, the whole length) still split into members, so they
    /// still inflate in parallel, alone or mixed with new ones.
    #[tokio::test(flavor = "multi_thread")]
    async fn members_say_their_length_as_migz_and_old_cx_members_still_split() {
        let data = sample(3 * BLOCK + 777);
        let gz = Compression::Gzip { level: 6 };
        let ours = collect(compress(chunks(&data, 70_000), gz, 2))
            .await
            .unwrap();
        assert_eq!(&ours[10..16], &[8, 0, b'M', b'Z', 4, 0]);
        let deflate = u32::from_le_bytes(ours[16..20].try_into().unwrap()) as usize;
        let first = unit_len(&ours, gz).unwrap().unwrap();
        assert_eq!(first, 20 + deflate + 8);
        // The next member starts right there.
        assert_eq!(&ours[first..first + 4], &[0x1f, 0x8b, 8, 4]);

        let old: Vec<u8> = data.chunks(BLOCK).flat_map(cx_member).collect();
        let old_first = cx_member(&data[..BLOCK]).len();
        assert_eq!(unit_len(&old, gz), Ok(Some(old_first)), "split, not serial");
        assert_eq!(
            collect(decompress(chunks(&old, 4096), gz)).await.unwrap(),
            data
        );
        let mut mixed = old.clone();
        mixed.extend_from_slice(&ours);
        mixed.extend_from_slice(&old);
        let want = [&data[..], &data, &data].concat();
        assert_eq!(
            collect(decompress(chunks(&mixed, 100_000), gz))
                .await
                .unwrap(),
            want
        );
        assert_eq!(stock_decode("gzip", mixed), want);
    }

    /// Python mgzip, a reader of the MiGz convention, inflates our members
    /// through their `MZ` lengths (a wrong length would misplace every
    /// member after the first).
    #[tokio::test]
    async fn mgzip_reads_our_gzip_members() {
        let data = sample(4 * BLOCK + 4321);
        let ours = collect(compress(
            chunks(&data, 70_000),
            Compression::Gzip { level: 6 },
            2,
        ))
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ours.gz");
        std::fs::write(&file, &ours).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mgzip-read");
        let out = std::process::Command::new(script)
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        assert!(
            out.status.success(),
            "mgzip-read: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == data, "mgzip read {} bytes", out.stdout.len());
    }

    #[tokio::test]
    async fn zstd_frames_with_and_without_their_content_size() {
        let data = sample(5 * BLOCK + 12_345);
        let zs = Compression::Zstd { level: 1 };
        let ours = collect(compress(chunks(&data, 70_000), zs, 2))
            .await
            .unwrap();
        let first = unit_len(&ours, zs).unwrap().unwrap();
        assert!(first < ours.len(), "several frames");
        // zstd's own streaming output: one frame, no content size.
        let plain = zstd::stream::encode_all(&b"and a plain frame"[..], 3).unwrap();
        assert_eq!(unit_len(&plain, zs), Err(()));
        let mut mixed = ours.clone();
        mixed.extend_from_slice(&plain);
        mixed.extend_from_slice(&ours);
        let mut want = data.clone();
        want.extend_from_slice(b"and a plain frame");
        want.extend_from_slice(&data);
        for stream in [
            chunks(&mixed, 4096),
            chunks(&mixed, 3 << 20),
            chunks(&mixed, 7),
        ] {
            assert_eq!(collect(decompress(stream, zs)).await.unwrap(), want);
        }
        // Truncated inside a frame, and a frame whose content size lies.
        let cut = &ours[..ours.len() - 3];
        assert!(collect(decompress(chunks(cut, 4096), zs)).await.is_err());
        let mut bad = ours.clone();
        bad[first + 40] ^= 0x55;
        assert!(
            collect(decompress(chunks(&bad, 4096), zs)).await.is_err()
                || collect(decompress(chunks(&bad, 4096), zs)).await.unwrap() != data
        );
        // zstd itself reads them.
        assert_eq!(stock_decode("zstd", mixed), want);
    }
}
