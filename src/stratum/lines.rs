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
    /// Bytes of `buf` already scanned for a newline.
    scanned: usize,
    max: usize,
}

impl LineReader {
    pub fn new(max: usize) -> LineReader {
        LineReader { buf: Vec::new(), scanned: 0, max }
    }

    /// A line already buffered, if any, without reading.
    pub fn buffered_line(&mut self) -> Option<Line> {
        if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let end = self.scanned + pos;
            if end > self.max {
                return Some(Line::TooLong);
            }
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.scanned = 0;
            if self.buf.is_empty() && self.buf.capacity() > 4096 {
                self.buf = Vec::new();
            }
            return Some(Line::Data(line));
        }
        self.scanned = self.buf.len();
        if self.buf.len() > self.max {
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
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(if self.buf.capacity() == 0 { 512 } else { self.buf.capacity() });
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
}
