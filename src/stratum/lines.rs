//! Newline-delimited reading with a hard cap on line length, safe to use inside `select!`
//! (the buffer lives in the struct, so a cancelled read loses nothing).

use tokio::io::{AsyncRead, AsyncReadExt};

/// What the next call produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (without `\n` and a trailing `\r`).
    Data(Vec<u8>),
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
            let line = self.buf[self.start..stop].to_vec();
            self.start = end + 1;
            self.scanned = self.start;
            if self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
                self.scanned = 0;
                if self.buf.capacity() > 4096 {
                    self.buf = Vec::new();
                }
            }
            return Some(Line::Data(line));
        }
        self.scanned = self.buf.len();
        if self.buf.len() - self.start > self.max {
            return Some(Line::TooLong);
        }
        None
    }

    /// Reads until a full line is buffered. Cancel-safe.
    pub async fn next_line<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<Line> {
        loop {
            if let Some(l) = self.buffered_line() {
                return Ok(l);
            }
            if self.start > 0 {
                // Keep only the partial line.
                self.buf.drain(..self.start);
                self.scanned -= self.start;
                self.start = 0;
            }
            // 256 bytes hold a subscribe or a submit; the buffer doubles for pipelined miners.
            if self.buf.capacity() - self.buf.len() < 256 {
                self.buf.reserve(self.buf.capacity().max(256));
            }
            let n = r.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Ok(Line::Eof);
            }
        }
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
        assert_eq!(l.next_line(&mut r).await.unwrap(), Line::Data(b"one".to_vec()));
        assert_eq!(l.next_line(&mut r).await.unwrap(), Line::Data(b"two".to_vec()));
        assert_eq!(l.next_line(&mut r).await.unwrap(), Line::Data(b"".to_vec()));
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
                assert_eq!(l.next_line(&mut r).await.unwrap(), Line::Data(want), "piece {piece}, line {i}");
            }
            assert_eq!(l.next_line(&mut r).await.unwrap(), Line::Eof);
        }
    }
}
