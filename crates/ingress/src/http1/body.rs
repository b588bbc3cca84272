//! Message bodies on the ingress's fast path: how a body is delimited ([`Framing`]), and a
//! scanner that finds where a chunked body ends as its bytes pass through ([`Chunked`]),
//! optionally picking out the data (for an HTTP/1.0 client, which cannot take chunks).

use std::ops::Range;

/// How a message body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a response to HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length` bytes (0 for a request without a body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes the connection (a response without a length).
    Close,
}

/// Longest chunk-size line (with extensions) and trailer section accepted.
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the hex size; `digits` read so far.
    Size {
        digits: u8,
    },
    /// After the size, in whitespace before an extension.
    SizeSpace,
    /// In a chunk extension, up to the line's end.
    Extension,
    /// After the size line's CR.
    SizeLf,
    /// In a chunk's data.
    Data,
    /// After a chunk's data: its CR, then its LF.
    DataCr,
    DataLf,
    /// In the trailer section; `line` bytes of the current line so far.
    Trailer {
        line: usize,
    },
    /// After a trailer line's CR.
    TrailerLf {
        line: usize,
    },
    /// The body has ended.
    Done,
}

/// Where a chunked body ends, found incrementally.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// The chunk size being read, then the data left in the chunk.
    size: u64,
    /// Bytes of the current size line or of the trailers.
    line: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
        }
    }
}

impl Chunked {
    /// Whether the final chunk and the trailers have been seen.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads on through `bytes`; returns how many of them belong to the body (all of them
    /// unless the body ends within). With `data`, the ranges of chunk data among them are
    /// appended to it. An error says what is malformed.
    pub fn scan(
        &mut self,
        bytes: &[u8],
        mut data: Option<&mut Vec<Range<usize>>>,
    ) -> Result<usize, String> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let n = (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    if let Some(d) = data.as_deref_mut() {
                        d.push(i..i + n);
                    }
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Size { digits } => match (b as char).to_digit(16) {
                    Some(d) => {
                        if self.size > u64::MAX >> 4 {
                            return Err("chunk size too large".into());
                        }
                        self.size = self.size * 16 + u64::from(d);
                        self.state = State::Size {
                            digits: digits.saturating_add(1),
                        };
                    }
                    None if digits == 0 => return Err("chunk size missing".into()),
                    None => match b {
                        b';' => self.state = State::Extension,
                        b' ' | b'\t' => self.state = State::SizeSpace,
                        b'\r' => self.state = State::SizeLf,
                        _ => return Err(format!("bad byte {b:#04x} in a chunk size")),
                    },
                },
                State::SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Extension,
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(format!("bad byte {b:#04x} after a chunk size")),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err("chunk extension ends without CR".into()),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err("chunk extension too long".into());
                        }
                    }
                },
                State::SizeLf => match b {
                    b'\n' => self.size_line_ended(),
                    _ => return Err("chunk size line without LF".into()),
                },
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    _ => return Err("chunk data longer than its size".into()),
                },
                State::DataLf => match b {
                    b'\n' => self.next_chunk(),
                    _ => return Err("chunk data not followed by CRLF".into()),
                },
                State::TrailerLf { line } => match b {
                    b'\n' if line == 0 => {
                        self.state = State::Done;
                        return Ok(i + 1);
                    }
                    b'\n' => self.state = State::Trailer { line: 0 },
                    _ => return Err("trailer line without LF".into()),
                },
                State::Trailer { line } => match b {
                    b'\r' => self.state = State::TrailerLf { line },
                    b'\n' => return Err("trailer line ends without CR".into()),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err("chunked trailers too long".into());
                        }
                        self.state = State::Trailer { line: line + 1 };
                    }
                },
            }
            i += 1;
        }
        Ok(i)
    }

    fn size_line_ended(&mut self) {
        self.line = 0;
        self.state = if self.size == 0 {
            State::Trailer { line: 0 }
        } else {
            State::Data
        };
    }

    fn next_chunk(&mut self) {
        self.size = 0;
        self.state = State::Size { digits: 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";

    /// Scans `body` split at `at`, returning (consumed, decoded data, done).
    fn scan_split(body: &[u8], at: usize) -> (usize, Vec<u8>, bool) {
        let mut c = Chunked::default();
        let (mut consumed, mut out) = (0, Vec::new());
        for part in [&body[..at], &body[at..]] {
            let mut ranges = Vec::new();
            let n = c.scan(part, Some(&mut ranges)).unwrap();
            for r in ranges {
                out.extend_from_slice(&part[r]);
            }
            consumed += n;
            if c.done() {
                break;
            }
        }
        (consumed, out, c.done())
    }

    #[test]
    fn finds_the_end_at_every_split() {
        for at in 0..=BODY.len() {
            let (consumed, data, done) = scan_split(BODY, at);
            assert!(done, "split at {at}");
            assert_eq!(consumed, BODY.len(), "split at {at}");
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "split at {at}");
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let mut pipelined = BODY.to_vec();
        pipelined.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let mut c = Chunked::default();
        assert_eq!(c.scan(&pipelined, None).unwrap(), BODY.len());
        assert!(c.done());
        let mut c = Chunked::default();
        assert_eq!(c.scan(b"0\r\n\r\nrest", None).unwrap(), 5);
    }

    #[test]
    fn incomplete_bodies_are_not_done() {
        let mut c = Chunked::default();
        assert_eq!(c.scan(&BODY[..20], None).unwrap(), 20);
        assert!(!c.done());
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [
            &b"\r\n"[..],
            b"zz\r\n",
            b"5\r\nhello!\r\n",
            b"5\r\nhelloXY",
            b"5\rX",
            b"ffffffffffffffffff\r\n",
            // Bare LFs and stray whitespace ("funky chunks"): CRLF only.
            b"5\nhello\r\n",
            b"2;\nxx\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5 6\r\n",
            b"0\r\nX-T: 1\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                Chunked::default().scan(bad, None).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "x".repeat(MAX_LINE + 1));
        assert!(Chunked::default().scan(long.as_bytes(), None).is_err());
    }
}
