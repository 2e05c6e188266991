//! `LineReader`: any bytes, handed over in pieces of any size, come out as the lines a plain
//! split on `\n` gives (a trailing `\r` dropped), until a line longer than the cap (TooLong);
//! a last line without its newline is dropped at end of stream.
//! Input: byte 0 = cap (1..=64), byte 1 = piece size (1..=32), then the stream.
#![no_main]
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use ckpool::sv1::lines::{Line, LineReader};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

struct Pieces<'a>(&'a [u8], usize);

impl AsyncRead for Pieces<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = self.1.min(self.0.len()).min(buf.remaining());
        buf.put_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, PartialEq)]
enum Got {
    Data(Vec<u8>),
    TooLong,
    Eof,
}

/// What the reader must produce.
fn reference(mut rest: &[u8], max: usize) -> Vec<Got> {
    let mut out = Vec::new();
    loop {
        match rest.iter().position(|&b| b == b'\n') {
            Some(p) => {
                let l = &rest[..p];
                if l.len() > max {
                    out.push(Got::TooLong);
                    return out;
                }
                out.push(Got::Data(l.strip_suffix(b"\r").unwrap_or(l).to_vec()));
                rest = &rest[p + 1..];
            }
            None => {
                out.push(if rest.len() > max { Got::TooLong } else { Got::Eof });
                return out;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = data[0] as usize % 64 + 1;
    let piece = data[1] as usize % 32 + 1;
    let body = &data[2..];
    let mut src = Pieces(body, piece);
    let mut reader = LineReader::new(max);
    let mut cx = Context::from_waker(Waker::noop());
    let mut got = Vec::new();
    loop {
        let r = {
            let mut fut = std::pin::pin!(reader.next_line(&mut src));
            let Poll::Ready(r) = fut.as_mut().poll(&mut cx) else { panic!("a ready reader left the line pending") };
            r
        };
        let g = match r.expect("in-memory reads never fail") {
            Line::Data(range) => Got::Data(reader.line(range).to_vec()),
            Line::TooLong => Got::TooLong,
            Line::Eof => Got::Eof,
        };
        let end = !matches!(g, Got::Data(_));
        got.push(g);
        if end {
            break;
        }
        reader.release_if_drained();
    }
    assert_eq!(got, reference(body, max));
});
