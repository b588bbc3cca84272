//! The client side of SPDY/3.1 framing, as much as the agent needs to drive an exec or attach
//! session on containerd's streaming server: frames read and written, and the header blocks of
//! the streams it opens (name/value pairs compressed with zlib under SPDY/3's preset
//! dictionary, one compression context for the connection, each block ending in a sync flush).
//!
//! Header blocks the server sends (SYN_REPLY) are not needed and never decompressed. Flow
//! control: every DATA frame received is acknowledged with a WINDOW_UPDATE; the server's
//! windows are not enforced on what is sent (the Go implementation on the other side, as
//! kubectl's, does not send updates).

use std::io;

use flate2::{Compress, Compression, FlushCompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

/// SPDY/3's preset dictionary for header compression (SPDY protocol draft 3, section
/// 2.6.10.1), 1423 bytes.
pub const DICTIONARY: &[u8] = include_bytes!("spdy3-dictionary.bin");

const VERSION: u16 = 3;

/// Control frame types used here.
pub mod kind {
    /// SYN_STREAM.
    pub const SYN_STREAM: u16 = 1;
    /// SYN_REPLY.
    pub const SYN_REPLY: u16 = 2;
    /// RST_STREAM.
    pub const RST_STREAM: u16 = 3;
    /// PING.
    pub const PING: u16 = 6;
    /// GOAWAY.
    pub const GOAWAY: u16 = 7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// The FIN flag (of DATA and SYN_STREAM frames).
pub const FLAG_FIN: u8 = 0x01;

/// A frame as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A DATA frame.
    Data {
        /// The stream.
        stream: u32,
        /// Whether the sender finished the stream.
        fin: bool,
        /// The payload.
        data: Vec<u8>,
    },
    /// A control frame (its body undecoded).
    Control {
        /// The type.
        kind: u16,
        /// The flags.
        flags: u8,
        /// The body.
        body: Vec<u8>,
    },
}

/// Reads one frame; `None` when the connection ends between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if head[0] & 0x80 != 0 {
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            flags,
            body,
        }))
    } else {
        Ok(Some(Frame::Data {
            stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff,
            fin: flags & FLAG_FIN != 0,
            data: body,
        }))
    }
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

/// A DATA frame (payloads over 16 MiB are the caller's to split).
pub fn data(stream: u32, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// A WINDOW_UPDATE granting `delta` more bytes on `stream`.
pub fn window_update(stream: u32, delta: u32) -> Vec<u8> {
    let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    body.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
    control(kind::WINDOW_UPDATE, 0, &body)
}

/// A PING frame with this body (the answer to the server's ping is its own frame back).
pub fn ping(body: &[u8]) -> Vec<u8> {
    control(kind::PING, 0, body)
}

/// A GOAWAY frame (status OK).
pub fn goaway(last_good_stream: u32) -> Vec<u8> {
    let mut body = (last_good_stream & 0x7fff_ffff).to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    control(kind::GOAWAY, 0, &body)
}

/// Compresses header blocks for one connection.
pub struct HeaderEncoder {
    zlib: Compress,
}

impl HeaderEncoder {
    /// A fresh compression context primed with SPDY/3's dictionary.
    pub fn new() -> io::Result<Self> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(DICTIONARY)
            .map_err(|e| io::Error::other(format!("zlib dictionary: {e}")))?;
        Ok(Self { zlib })
    }

    /// The compressed header block for these (lower-case) names and values.
    pub fn block(&mut self, headers: &[(&str, &str)]) -> io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
            raw.extend_from_slice(name.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start_in = self.zlib.total_in();
        loop {
            let consumed = (self.zlib.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let status = self
                .zlib
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| io::Error::other(format!("zlib: {e}")))?;
            let done = (self.zlib.total_in() - start_in) as usize == raw.len()
                && out.len() < out.capacity();
            if done || status == Status::StreamEnd {
                return Ok(out);
            }
        }
    }

    /// A SYN_STREAM opening `stream` with these headers (not finished: both sides may send).
    pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)]) -> io::Result<Vec<u8>> {
        let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
        body.extend_from_slice(&0u32.to_be_bytes()); // associated-to stream
        body.extend_from_slice(&[0, 0]); // priority, slot
        body.extend_from_slice(&self.block(headers)?);
        Ok(control(kind::SYN_STREAM, 0, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
    }

    /// Decompresses a connection's header blocks in order, as the server does.
    fn inflate(blocks: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut z = Decompress::new(true);
        let mut out = vec![];
        for b in blocks {
            let mut buf = Vec::with_capacity(4096);
            let before = z.total_in();
            if let Err(e) = z.decompress_vec(b, &mut buf, FlushDecompress::Sync) {
                assert!(e.needs_dictionary().is_some(), "{e}");
                z.set_dictionary(DICTIONARY).unwrap();
                let used = (z.total_in() - before) as usize;
                z.decompress_vec(&b[used..], &mut buf, FlushDecompress::Sync)
                    .unwrap();
            }
            out.push(buf);
        }
        out
    }

    #[test]
    fn header_blocks_share_one_context() {
        let mut enc = HeaderEncoder::new().unwrap();
        let a = enc.block(&[("streamType", "error")]).unwrap();
        let b = enc.block(&[("streamtype", "stdout")]).unwrap();
        let raw = inflate(&[a, b]);
        let expect = |v: &str| {
            let mut r = 1u32.to_be_bytes().to_vec();
            r.extend_from_slice(&10u32.to_be_bytes());
            r.extend_from_slice(b"streamtype");
            r.extend_from_slice(&(v.len() as u32).to_be_bytes());
            r.extend_from_slice(v.as_bytes());
            r
        };
        assert_eq!(raw, vec![expect("error"), expect("stdout")]);
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut wire = data(3, true, b"hello");
        wire.extend(window_update(5, 100));
        let mut r = &wire[..];
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: b"hello".to_vec()
            })
        );
        match read_frame(&mut r).await.unwrap() {
            Some(Frame::Control { kind, body, .. }) => {
                assert_eq!(kind, kind::WINDOW_UPDATE);
                assert_eq!(body, [0, 0, 0, 5, 0, 0, 0, 100]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
    }
}
