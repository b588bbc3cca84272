//! Log output: every line to stderr, the ingress's access log in batches.
//!
//! The ingress logs one line per request (target `ingress::access`). Written one by one,
//! each would be a `write` to stderr under stderr's lock, which the ingress's worker threads
//! then contend for (futex waits and wakeups on every few requests; a worker preempted while
//! holding the lock stalls the other's requests, which showed in the ingress's p99). So those lines are
//! appended to a buffer instead, and a flusher thread writes the buffer out [`INTERVAL`] after
//! its first line (or the logging thread does, once it holds [`LIMIT`] bytes): every line is
//! still written, in order, at most [`INTERVAL`] late, as with nginx's `access_log ...
//! buffer= flush=`. Other lines go to stderr straight away. What is buffered is written when
//! the [`Flush`] guard returned by [`init`] is dropped, at the end of `main`'s subcommand.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// How long an access-log line may wait in the buffer.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Buffered bytes at which the logging thread writes the buffer out itself.
pub const LIMIT: usize = 256 * 1024;
/// The target of the lines that are batched.
const ACCESS_TARGET: &str = "ingress::access";

/// Starts logging to stderr at `filter` (an `EnvFilter` directive; `info` if it does not
/// parse). Keep the guard until the end: dropping it writes out what is buffered.
pub fn init(filter: &str) -> Flush {
    // hickory-server logs every query at info: quiet unless asked for by name.
    let filter = if filter.contains("hickory") {
        filter.to_string()
    } else {
        format!("{filter},hickory_server=warn")
    };
    let batch = Batch::start();
    let writer = batch
        .clone()
        .with_filter(|meta| meta.target() == ACCESS_TARGET)
        .or_else(std::io::stderr);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        // Colours only for a terminal: a log file or journal gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer)
        .init();
    Flush(batch)
}

/// Writes out the buffered lines when dropped.
pub struct Flush(Batch);

impl Drop for Flush {
    fn drop(&mut self) {
        self.0.flush_out();
    }
}

/// The buffer of access-log lines; a `MakeWriter` whose writers append to it.
#[derive(Clone)]
struct Batch(Arc<Shared>);

struct Shared {
    /// Lines not yet written.
    buf: Mutex<Vec<u8>>,
    /// Signalled when `buf` turns non-empty.
    filled: Condvar,
    /// Held while writing to stderr, so that batches go out in the order they were taken.
    out: Mutex<()>,
    /// Whether the flusher thread runs; without it, lines are written straight away.
    batched: AtomicBool,
}

impl Batch {
    /// A new buffer and its flusher thread.
    fn start() -> Batch {
        let batch = Batch(Arc::new(Shared {
            buf: Mutex::new(Vec::new()),
            filled: Condvar::new(),
            out: Mutex::new(()),
            batched: AtomicBool::new(true),
        }));
        let flusher = batch.clone();
        let started = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || flusher.flush_loop());
        if let Err(e) = started {
            eprintln!("corten: no log flusher thread ({e}); access-log lines are not batched");
            batch.0.batched.store(false, Ordering::Relaxed);
        }
        batch
    }

    /// Waits for a line, lets more come for [`INTERVAL`], writes them out; forever.
    fn flush_loop(&self) {
        'flushing: loop {
            let Ok(mut buf) = self.0.buf.lock() else {
                break;
            };
            while buf.is_empty() {
                buf = match self.0.filled.wait(buf) {
                    Ok(b) => b,
                    Err(_) => break 'flushing,
                };
            }
            drop(buf);
            std::thread::sleep(INTERVAL);
            self.flush_out();
        }
        self.0.batched.store(false, Ordering::Relaxed);
    }

    /// Writes out what is buffered.
    fn flush_out(&self) {
        let Ok(_out) = self.0.out.lock() else {
            return;
        };
        let data = match self.0.buf.lock() {
            Ok(mut buf) => std::mem::take(&mut *buf),
            Err(_) => return,
        };
        if !data.is_empty() {
            let _ = std::io::stderr().write_all(&data);
        }
    }
}

impl<'a> MakeWriter<'a> for Batch {
    type Writer = &'a Batch;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Appends (the formatter writes each line with one `write_all`).
impl Write for &Batch {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if !self.0.batched.load(Ordering::Relaxed) {
            return std::io::stderr().write(data);
        }
        let full = match self.0.buf.lock() {
            Ok(mut buf) => {
                if buf.is_empty() {
                    self.0.filled.notify_one();
                }
                buf.extend_from_slice(data);
                buf.len() >= LIMIT
            }
            Err(_) => return std::io::stderr().write(data),
        };
        if full {
            self.flush_out();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_in_order_until_written_out() {
        let batch = Batch(Arc::new(Shared {
            buf: Mutex::new(Vec::new()),
            filled: Condvar::new(),
            out: Mutex::new(()),
            batched: AtomicBool::new(true),
        }));
        let mut w = batch.make_writer();
        w.write_all(b"one\n").unwrap();
        w.write_all(b"two\n").unwrap();
        assert_eq!(&*batch.0.buf.lock().unwrap(), b"one\ntwo\n");
        batch.flush_out();
        assert!(batch.0.buf.lock().unwrap().is_empty());
    }
}
