//! Stratum V2's encrypted transport over TCP: the Noise NX handshake (as responder for the pool,
//! as initiator for our client and load tool, [`super::noise`]), and framed, encrypted messages
//! after it, sealed and opened in place with the cipher halves the handshake hands out.
//!
//! A frame on the wire is its 6-byte header sealed as one AEAD message (22 bytes), then its
//! payload sealed in chunks of at most 65,519 bytes (each followed by its 16-byte tag), as SRI's
//! `codec_sv2` lays them out. Frames are sealed straight into the write buffer and opened in the
//! read buffer where they arrived: no allocation or copy per frame (issue 31).
//!
//! Reads are cancellation-safe (the bytes of a frame read so far and its opened header live in
//! [`FrameReader`], not in the future), so a session can `select!` on the next frame beside new
//! work. Every frame is bounded: a header announcing more than the reader's limit closes the
//! connection with [`TransportError::Oversized`] before any of the payload is buffered.

use std::task::{Context, Poll};
use std::time::Duration;

use super::noise::{Decryptor, Encryptor, Initiator, NoiseError, Responder, ACT_1_LEN, ACT_2_LEN, MAC_LEN};
use framing_sv2::framing::{EncodableFrame, MessageFrame};
use framing_sv2::header::Header;
use parsers_sv2::AnyMessage;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The buffer of the first read after a wait (a batch of pipelined submits is ~100 bytes
/// each, a channel's setup a few hundred); it lives only while its frames are handled.
const FIRST_READ: usize = 4 * 1024;
/// Bytes read at once when more than the first read's room is wanted (a long frame, a burst).
const READ_BUF: usize = 8 * 1024;
/// A frame's header, sealed.
const SEALED_HEADER: usize = Header::SIZE + MAC_LEN;
/// Plaintext bytes one sealed chunk of a payload carries.
const CHUNK: usize = framing_sv2::SV2_FRAME_CHUNK_SIZE - MAC_LEN;

/// Why a connection's transport failed; the text is for the operator's log line.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a frame ({0} bytes of it read)")]
    Truncated(usize),
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no complete handshake message within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("handshake failed: {0}")]
    Handshake(#[from] NoiseError),
    #[error("frame larger than {limit} bytes ({read} bytes of it read); closing")]
    Oversized { read: usize, limit: usize },
    #[error("frame could not be decrypted or decoded (not a Stratum V2 client, or a corrupted stream): {0}")]
    Codec(String),
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

/// A reading half that can wait until bytes (or the end) can be read, holding no buffer while
/// it waits: an idle connection then holds no read buffer at all (issue 31).
pub trait ReadReady {
    /// Ready when a read would not wait; a reader that cannot tell is always ready (it then
    /// holds its buffer while the read waits).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl ReadReady for tokio::net::tcp::OwnedReadHalf {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let stream: &tokio::net::TcpStream = self.as_ref();
        stream.poll_read_ready(cx)
    }
}

impl<T> ReadReady for tokio::io::ReadHalf<T> {
    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One opened frame: its header and plaintext payload, owned (`Vec<u8>`, the client's) or
/// borrowed from the reader's buffer until the next read (`&mut [u8]`, the pool's sessions).
pub struct Frame<P = Vec<u8>> {
    pub header: Header,
    pub payload: P,
}

/// A frame borrowed from the reader's buffer ([`FrameReader::next_frame`]).
pub type FrameRef<'a> = Frame<&'a mut [u8]>;

impl<P: AsMut<[u8]>> Frame<P> {
    pub fn msg_type(&self) -> u8 {
        self.header.msg_type()
    }

    /// The message, parsed by SRI's parsers (borrowing the payload).
    pub fn message(&mut self) -> Result<AnyMessage<'_>, parsers_sv2::ParserError> {
        AnyMessage::try_from((self.header, self.payload.as_mut()))
    }
}

/// Bytes a payload of `len` takes sealed: the payload plus one tag per chunk.
fn sealed_len(len: usize) -> usize {
    len + len.div_ceil(CHUNK) * MAC_LEN
}

/// The reading half after the handshake.
pub struct FrameReader<R> {
    rd: R,
    dec: Decryptor,
    /// Bytes read from the socket and not yet opened (`start..`): one read takes every frame
    /// that has arrived. A frame handed out by reference lives in `..start` until the next
    /// call, which gives the buffer back once all of it is taken (an idle connection holds no
    /// read buffer).
    inbuf: Vec<u8>,
    start: usize,
    /// The opened header of a frame whose payload has not all arrived.
    header: Option<Header>,
    limit: usize,
}

/// The writing half: frames are sealed into `out` and written together by [`FrameWriter::flush`].
pub struct FrameWriter<W> {
    wr: W,
    enc: Encryptor,
    /// Given back once written, so an idle connection holds no write buffer.
    out: Vec<u8>,
    /// Bytes of `out` already written (a flush cancelled midway goes on from here).
    sent: usize,
}

/// Reads one handshake message of exactly `N` bytes, within `timeout`.
async fn read_handshake<R: AsyncRead + Unpin, const N: usize>(
    rd: &mut R,
    timeout: Duration,
) -> Result<[u8; N], TransportError> {
    let mut buf = [0u8; N];
    match tokio::time::timeout(timeout, rd.read_exact(&mut buf)).await {
        Err(_) => Err(TransportError::HandshakeTimeout(timeout)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(TransportError::Closed),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(_)) => Ok(buf),
    }
}

/// The pool's side of the handshake: reads the initiator's ephemeral key, answers with the
/// static key and the certificate signed by the authority key.
pub async fn accept<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    responder: Responder,
    timeout: Duration,
    limit: usize,
) -> Result<(FrameReader<R>, FrameWriter<W>), TransportError> {
    let first = read_handshake::<R, ACT_1_LEN>(&mut rd, timeout).await?;
    let (second, enc, dec) = responder.step_1(&first)?;
    tokio::time::timeout(timeout, wr.write_all(&second))
        .await
        .map_err(|_| TransportError::HandshakeTimeout(timeout))??;
    Ok(halves(rd, wr, enc, dec, limit))
}

/// The client's side: sends an ephemeral key, checks the pool's certificate against the
/// authority key the initiator was made with.
pub async fn connect<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    initiator: Initiator,
    timeout: Duration,
    limit: usize,
) -> Result<(FrameReader<R>, FrameWriter<W>), TransportError> {
    let (first, sent) = initiator.step_0();
    wr.write_all(&first).await?;
    let second = read_handshake::<R, ACT_2_LEN>(&mut rd, timeout).await?;
    let (enc, dec) = sent.step_2(&second)?;
    Ok(halves(rd, wr, enc, dec, limit))
}

fn halves<R, W>(rd: R, wr: W, enc: Encryptor, dec: Decryptor, limit: usize) -> (FrameReader<R>, FrameWriter<W>) {
    (
        FrameReader { rd, dec, inbuf: Vec::new(), start: 0, header: None, limit },
        FrameWriter { wr, enc, out: Vec::new(), sent: 0 },
    )
}

impl<R: AsyncRead + ReadReady + Unpin> FrameReader<R> {
    /// The next whole frame, copied out of the read buffer (the client's; see [`Self::next_frame`]).
    pub async fn read_frame(&mut self) -> Result<Frame, TransportError> {
        let f = self.next_frame().await?;
        Ok(Frame { header: f.header, payload: f.payload.to_vec() })
    }

    /// The next whole frame, opened in the read buffer and borrowed from it until the next call.
    /// Cancellation-safe: bytes read and a header opened before a cancel are kept.
    pub async fn next_frame(&mut self) -> Result<FrameRef<'_>, TransportError> {
        if self.start == self.inbuf.len() && self.inbuf.capacity() > 0 {
            // The last frame handed out is done with: the buffer goes back.
            self.inbuf = Vec::new();
            self.start = 0;
        }
        loop {
            let need = match &self.header {
                None => SEALED_HEADER,
                Some(h) => sealed_len(h.payload_length()),
            };
            self.fill(need).await?;
            let at = self.start;
            self.start += need;
            match self.header.take() {
                None => {
                    let sealed = &mut self.inbuf[at..at + SEALED_HEADER];
                    self.dec.open_in_place(sealed).map_err(|e| TransportError::Codec(format!("frame header: {e}")))?;
                    let h = Header::from_bytes(&sealed[..Header::SIZE])
                        .map_err(|e| TransportError::Codec(format!("frame header: {e:?}")))?;
                    let whole = SEALED_HEADER + sealed_len(h.payload_length());
                    if whole > self.limit {
                        let read = SEALED_HEADER + self.inbuf.len() - self.start;
                        return Err(TransportError::Oversized { read, limit: self.limit });
                    }
                    self.header = Some(h);
                }
                Some(h) => {
                    let len = h.payload_length();
                    self.open_payload(at, len)?;
                    return Ok(Frame { header: h, payload: &mut self.inbuf[at..at + len] });
                }
            }
        }
    }

    /// Opens a sealed payload of `len` plaintext bytes at `at`, chunk by chunk, moving each
    /// chunk's plaintext up against the previous one (over its tag).
    fn open_payload(&mut self, at: usize, len: usize) -> Result<(), TransportError> {
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            let src = at + done + (done / CHUNK) * MAC_LEN;
            let sealed = &mut self.inbuf[src..src + n + MAC_LEN];
            self.dec.open_in_place(sealed).map_err(|e| TransportError::Codec(format!("frame payload: {e}")))?;
            if src != at + done {
                self.inbuf.copy_within(src..src + n, at + done);
            }
            done += n;
        }
        Ok(())
    }

    /// Reads until `need` bytes are buffered past `start`.
    async fn fill(&mut self, need: usize) -> Result<(), TransportError> {
        while self.inbuf.len() - self.start < need {
            let first = self.inbuf.capacity() == 0;
            if first {
                // Nothing held: wait for bytes before taking a buffer (cancel-safe), so a
                // connection waiting for its next frame holds none.
                std::future::poll_fn(|cx| self.rd.poll_read_ready(cx)).await?;
            } else if self.start > 0 && self.inbuf.capacity() - self.start < need.max(READ_BUF) {
                // Room for the rest of this piece: move what is buffered to the front.
                self.inbuf.drain(..self.start);
                self.start = 0;
            }
            // Read into spare capacity (nothing zeroed first): at least the piece wanted.
            let room = need.max(if first { FIRST_READ } else { READ_BUF });
            self.inbuf.reserve(room - (self.inbuf.len() - self.start));
            if self.rd.read_buf(&mut self.inbuf).await? == 0 {
                return Err(self.ended());
            }
        }
        Ok(())
    }

    /// The error for the end of the stream here: closed between frames, or in one.
    fn ended(&self) -> TransportError {
        let read = self.inbuf.len() - self.start + if self.header.is_some() { SEALED_HEADER } else { 0 };
        if read == 0 {
            TransportError::Closed
        } else {
            TransportError::Truncated(read)
        }
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Seals `msg` into the outgoing buffer (sent by [`FrameWriter::flush`]).
    pub fn push(&mut self, msg: AnyMessage<'_>) -> Result<(), TransportError> {
        let frame = MessageFrame::try_from(msg).map_err(|e| TransportError::Encode(format!("{e:?}")))?;
        let len = frame.encoded_length();
        self.seal(len, |dst| frame.encode_into(dst).map_err(|e| TransportError::Encode(format!("{e:?}"))))
    }

    /// Seals a frame built from its parts, whatever the message type (tests use it to send
    /// what a well-behaved client never would).
    pub fn push_raw(&mut self, ext_type: u16, msg_type: u8, payload: &[u8]) -> Result<(), TransportError> {
        self.push_with(ext_type, msg_type, payload.len(), |dst| dst.copy_from_slice(payload))
    }

    /// Seals a frame whose payload of `len` bytes `write` fills (the hot messages, encoded by
    /// hand: `sv2::hot`).
    pub fn push_with(
        &mut self,
        ext_type: u16,
        msg_type: u8,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<(), TransportError> {
        let l = u32::try_from(len)
            .ok()
            .filter(|l| *l < 1 << 24)
            .ok_or_else(|| TransportError::Encode(format!("payload of {len} bytes is over the 24-bit length")))?;
        self.seal(Header::SIZE + len, |dst| {
            dst[..2].copy_from_slice(&ext_type.to_le_bytes());
            dst[2] = msg_type;
            dst[3..6].copy_from_slice(&l.to_le_bytes()[..3]);
            write(&mut dst[Header::SIZE..]);
            Ok(())
        })
    }

    /// Seals a frame of `len` bytes (header and payload) that `encode` writes, in place at the
    /// end of the outgoing buffer: header, its tag, then each payload chunk and its tag.
    fn seal(
        &mut self,
        len: usize,
        encode: impl FnOnce(&mut [u8]) -> Result<(), TransportError>,
    ) -> Result<(), TransportError> {
        if len < Header::SIZE {
            return Err(TransportError::Encode(format!("frame of {len} bytes has no header")));
        }
        let plen = len - Header::SIZE;
        let at = self.out.len();
        self.out.resize(at + SEALED_HEADER + sealed_len(plen), 0);
        // Encoded after the header's tag room: the payload is then where its first chunk goes.
        let r = encode(&mut self.out[at + MAC_LEN..at + MAC_LEN + len]).and_then(|()| {
            self.out.copy_within(at + MAC_LEN..at + SEALED_HEADER, at);
            self.seal_in_place(at, plen)
        });
        if r.is_err() {
            self.out.truncate(at);
        }
        r
    }

    fn seal_in_place(&mut self, at: usize, plen: usize) -> Result<(), TransportError> {
        let fail = |e| TransportError::Encode(format!("sealing failed: {e}"));
        let body = at + SEALED_HEADER;
        // Chunks past the first move up to make room for the tags before them (last first).
        let chunks = plen.div_ceil(CHUNK);
        for i in (1..chunks).rev() {
            let n = CHUNK.min(plen - i * CHUNK);
            self.out.copy_within(body + i * CHUNK..body + i * CHUNK + n, body + i * (CHUNK + MAC_LEN));
        }
        self.enc.seal_in_place(&mut self.out[at..body]).map_err(fail)?;
        for i in 0..chunks {
            let n = CHUNK.min(plen - i * CHUNK);
            let from = body + i * (CHUNK + MAC_LEN);
            self.enc.seal_in_place(&mut self.out[from..from + n + MAC_LEN]).map_err(fail)?;
        }
        Ok(())
    }

    /// Drops all but the first `n` bytes waiting to be written (tests: half a frame).
    pub fn truncate_pending(&mut self, n: usize) {
        self.out.truncate(self.sent + n);
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes what was pushed.
    ///
    /// Cancel-safe: dropped midway, what was written is not written again and what was not is
    /// written by the next call (frames pushed meanwhile follow it).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        while self.sent < self.out.len() {
            let n = self.wr.write(&self.out[self.sent..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.sent += n;
        }
        if self.out.capacity() > 0 {
            // All written: the buffer goes back (the next batch of answers takes a new one).
            self.out = Vec::new();
            self.sent = 0;
        }
        self.wr.flush().await
    }

    /// Writes what was pushed, then closes the writing side.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.wr.shutdown().await;
    }
}

#[cfg(test)]
mod tests;
