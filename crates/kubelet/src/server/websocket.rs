//! The server side of RFC 6455 WebSocket, as much as the agent needs to speak kubectl's
//! `v5.channel.k8s.io` and its port-forward tunnel: the handshake's accept key, messages read
//! from the client (masked frames, fragmentation, control frames between fragments, a size
//! limit) and unfragmented frames written back.

use std::io;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The GUID RFC 6455 appends to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Opcode of a binary message.
pub const BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// Opcode of a pong frame.
pub const PONG: u8 = 0xA;

/// Close code: normal closure.
pub const NORMAL_CLOSURE: u16 = 1000;

/// `Sec-WebSocket-Accept` for the client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A binary message.
    Binary(Vec<u8>),
    /// A text message.
    Text(Vec<u8>),
    /// A ping (to be answered with a pong carrying the same payload).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
}

/// Reads the client's messages.
pub struct Reader<R> {
    io: R,
    max: usize,
    partial: Option<(u8, Vec<u8>)>,
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader that refuses messages over `max` bytes.
    pub fn new(io: R, max: usize) -> Self {
        Self {
            io,
            max,
            partial: None,
        }
    }

    /// The next message; `None` when the connection ends.
    pub async fn next(&mut self) -> io::Result<Option<Message>> {
        loop {
            let Some((fin, opcode, payload)) = self.frame().await? else {
                return Ok(None);
            };
            match opcode {
                0x8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Message::Close(code)));
                }
                0x9 => return Ok(Some(Message::Ping(payload))),
                0xA => return Ok(Some(Message::Pong)),
                0x1 | 0x2 if self.partial.is_some() => {
                    return Err(invalid("a new message began before the last one ended"));
                }
                0x1 | 0x2 if fin => return Ok(Some(message(opcode, payload))),
                0x1 | 0x2 => self.partial = Some((opcode, payload)),
                0x0 => {
                    let Some((op, mut data)) = self.partial.take() else {
                        return Err(invalid("a continuation frame without a message"));
                    };
                    if data.len() + payload.len() > self.max {
                        return Err(invalid("message too large"));
                    }
                    data.extend_from_slice(&payload);
                    if fin {
                        return Ok(Some(message(op, data)));
                    }
                    self.partial = Some((op, data));
                }
                _ => return Err(invalid("unknown opcode")),
            }
        }
    }

    async fn frame(&mut self) -> io::Result<Option<(bool, u8, Vec<u8>)>> {
        let mut head = [0u8; 2];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        if head[1] & 0x80 == 0 {
            return Err(invalid("client frames must be masked"));
        }
        let len = match head[1] & 0x7f {
            126 => u64::from(self.io.read_u16().await?),
            127 => self.io.read_u64().await?,
            n => u64::from(n),
        };
        if len > self.max as u64 || (opcode >= 0x8 && len > 125) {
            return Err(invalid("frame too large"));
        }
        let mut mask = [0u8; 4];
        self.io.read_exact(&mut mask).await?;
        let mut payload = vec![0u8; len as usize];
        self.io.read_exact(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        Ok(Some((fin, opcode, payload)))
    }
}

fn message(opcode: u8, data: Vec<u8>) -> Message {
    if opcode == 0x1 {
        Message::Text(data)
    } else {
        Message::Binary(data)
    }
}

/// Writes one unmasked, unfragmented frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    opcode: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    w.write_all(&frame).await?;
    w.flush().await
}

/// Writes a close frame with `code`.
pub async fn write_close<W: AsyncWrite + Unpin>(w: &mut W, code: u16) -> io::Result<()> {
    write_frame(w, CLOSE, &code.to_be_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_follows_rfc_6455() {
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if payload.len() < 126 {
            f.push(0x80 | payload.len() as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[tokio::test]
    async fn reads_fragmented_messages_with_pings_between() {
        let big = vec![7u8; 300];
        let mut wire = masked(false, BINARY, b"\x00he");
        wire.extend(masked(true, 0x9, b"p"));
        wire.extend(masked(true, 0x0, b"llo"));
        wire.extend(masked(true, BINARY, &big));
        wire.extend(masked(true, CLOSE, &1000u16.to_be_bytes()));
        let mut r = Reader::new(&wire[..], 1 << 20);
        assert_eq!(r.next().await.unwrap(), Some(Message::Ping(b"p".to_vec())));
        assert_eq!(
            r.next().await.unwrap(),
            Some(Message::Binary(b"\x00hello".to_vec()))
        );
        assert_eq!(r.next().await.unwrap(), Some(Message::Binary(big)));
        assert_eq!(r.next().await.unwrap(), Some(Message::Close(Some(1000))));
        assert_eq!(r.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_frames_are_errors() {
        let unmasked = [0x82u8, 0x01, 0x00];
        assert!(Reader::new(&unmasked[..], 1024).next().await.is_err());
        let big = masked(true, BINARY, &[0u8; 200]);
        assert!(Reader::new(&big[..], 100).next().await.is_err());
        let orphan = masked(true, 0x0, b"x");
        assert!(Reader::new(&orphan[..], 100).next().await.is_err());
    }

    #[tokio::test]
    async fn writes_frames_of_every_length() {
        for n in [0usize, 125, 126, 70_000] {
            let mut out = Vec::new();
            write_frame(&mut out, BINARY, &vec![1u8; n]).await.unwrap();
            let header = match n {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            assert_eq!(out.len(), header + n);
            assert_eq!(out[0], 0x82);
        }
    }
}
