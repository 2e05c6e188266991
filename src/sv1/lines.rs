//! Newline-delimited reading with a hard cap on line length, safe to use inside `select!`
//! (the buffer lives in the struct, so a cancelled read loses nothing).
//!
//! Lines are handed out as ranges into the reader's buffer (no copy or allocation per line);
//! a range stays valid until the next read. The buffer is given back whenever every byte read
//! has been consumed, so an idle connection holds no read buffer.

use std::ops::Range;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// Bytes reserved for a read: a few pipelined submits (a submit is ~160 bytes).
const READ_CHUNK: usize = 1024;

/// What the next call produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (without `\n` and a trailing `\r`): its place in the buffer.
    Data(Range<usize>),
    /// The peer sent more than the cap without a newline.
    TooLong,
    /// The peer closed the connection.
    Eof,
}

pub struct LineReader {
    buf: Vec<u8>,
    /// Where the next line starts in `buf` (bytes before it were handed out already).
    start: usize,
    /// Bytes of `buf` already scanned for a newline.
    scanned: usize,
    max: usize,
}

impl LineReader {
    pub fn new(max: usize) -> LineReader {
        LineReader { buf: Vec::new(), start: 0, scanned: 0, max }
    }

    /// The bytes of a line handed out by the last call.
    pub fn line(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    /// A line already buffered, if any, without reading. Lines are taken from the front by
    /// moving `start`; the buffer is compacted once per read, not once per line (pipelined
    /// submits arrive many to a read).
    pub fn buffered_line(&mut self) -> Option<Line> {
        if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let end = self.scanned + pos;
            if end - self.start > self.max {
                return Some(Line::TooLong);
            }
            let stop = if end > self.start && self.buf[end - 1] == b'\r' { end - 1 } else { end };
            let line = self.start..stop;
            self.start = end + 1;
            self.scanned = self.start;
            return Some(Line::Data(line));
        }
        self.scanned = self.buf.len();
        if self.buf.len() - self.start > self.max {
            return Some(Line::TooLong);
        }
        None
    }

    /// Drops consumed bytes before a read; gives the buffer back when nothing is pending.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        if self.start == self.buf.len() {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..self.start);
        }
        self.scanned -= self.start;
        self.start = 0;
    }

    /// Gives the buffer back if every line in it was consumed (call when going idle).
    pub fn release_if_drained(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
            self.scanned = 0;
        }
    }

    fn reserve(&mut self) {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(self.buf.capacity().max(READ_CHUNK));
        }
    }

    /// Reads what a ready socket holds without waiting (after `TcpStream::readable`).
    /// `Ok(0)` is end of stream; `WouldBlock` means the readiness was spurious.
    pub fn read_ready(&mut self, s: &TcpStream) -> std::io::Result<usize> {
        self.compact();
        self.reserve();
        let r = s.try_read_buf(&mut self.buf);
        if self.buf.is_empty() {
            self.buf = Vec::new(); // nothing came: hold no buffer while waiting again
        }
        r
    }

    /// Reads once from `r` into the buffer (a TLS stream, which has no readiness to wait on):
    /// the bytes read, 0 at end of stream. Cancel-safe.
    pub async fn read_some<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<usize> {
        self.compact();
        self.reserve();
        r.read_buf(&mut self.buf).await
    }

    /// Reads until a full line is buffered. Cancel-safe.
    pub async fn next_line<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<Line> {
        loop {
            if let Some(l) = self.buffered_line() {
                return Ok(l);
            }
            self.compact();
            self.reserve();
            let n = r.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Ok(Line::Eof);
            }
        }
    }

    /// [`next_line`](Self::next_line) with the bytes copied out (tests): `None` at end of stream.
    #[cfg(test)]
    async fn next_owned<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<Option<Result<Vec<u8>, ()>>> {
        Ok(match self.next_line(r).await? {
            Line::Data(range) => Some(Ok(self.buf[range].to_vec())),
            Line::TooLong => Some(Err(())),
            Line::Eof => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_and_caps() {
        let data = b"one\r\ntwo\n\nthree".to_vec();
        let mut r = &data[..];
        let mut l = LineReader::new(100);
        assert_eq!(l.next_owned(&mut r).await.unwrap(), Some(Ok(b"one".to_vec())));
        assert_eq!(l.next_owned(&mut r).await.unwrap(), Some(Ok(b"two".to_vec())));
        assert_eq!(l.next_owned(&mut r).await.unwrap(), Some(Ok(b"".to_vec())));
        assert_eq!(l.next_line(&mut r).await.unwrap(), Line::Eof);
        let long = vec![b'x'; 300];
        let mut r = &long[..];
        let mut l = LineReader::new(100);
        assert_eq!(l.next_line(&mut r).await.unwrap(), Line::TooLong);
        // A long line that arrives whole, newline included, is refused too.
        let mut long = vec![b'x'; 300];
        long.push(b'\n');
        let mut r = &long[..];
        let mut l = LineReader::new(100);
        assert_eq!(l.next_line(&mut r).await.unwrap(), Line::TooLong);
    }

    /// A reader that hands out its data in fixed-size pieces.
    struct Pieces<'a>(&'a [u8], usize);

    impl AsyncRead for Pieces<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn lines_split_across_reads() {
        let mut data = Vec::new();
        for i in 0..200 {
            data.extend_from_slice(format!("line {i} {}\r\n", "y".repeat(i % 37)).as_bytes());
        }
        for piece in [1, 7, 64, 600, 5000] {
            let mut r = Pieces(&data, piece);
            let mut l = LineReader::new(100);
            for i in 0..200 {
                let want = format!("line {i} {}", "y".repeat(i % 37)).into_bytes();
                assert_eq!(l.next_owned(&mut r).await.unwrap(), Some(Ok(want)), "piece {piece}, line {i}");
            }
            assert_eq!(l.next_line(&mut r).await.unwrap(), Line::Eof);
        }
    }
}
