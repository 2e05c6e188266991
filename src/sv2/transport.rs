//! Stratum V2's encrypted transport over TCP: the Noise NX handshake (as responder for the pool,
//! as initiator for our client and load tool) and framed, encrypted messages after it, through
//! SRI's `codec_sv2` / `noise_sv2`.
//!
//! Reads are cancellation-safe (the bytes of a frame read so far live in [`FrameReader`], not in
//! the future), so a session can `select!` on the next frame beside new work. Every frame is
//! bounded: bytes read since the last whole frame past the reader's limit close the connection
//! with [`TransportError::Oversized`], before a peer can make us buffer a 16 MB frame.

use std::task::{Context, Poll};
use std::time::Duration;

use codec_sv2::{
    Decoded, Decrypted, Handshake, HandshakeMessage, NoiseDecoder, NoiseEncoder, TransportDecryptState,
    TransportEncryptState,
};
use framing_sv2::framing::MessageFrame;
use framing_sv2::header::Header;
use noise_sv2::{Initiator, Responder, ELLSWIFT_ENCODING_SIZE, INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE};
use parsers_sv2::AnyMessage;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read from the socket at once (a batch of pipelined submits is ~100 bytes each).
const READ_BUF: usize = 8 * 1024;

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
    Handshake(String),
    #[error("frame larger than {limit} bytes ({read} bytes of it read); closing")]
    Oversized { read: usize, limit: usize },
    #[error("frame could not be decrypted or decoded (not a Stratum V2 client, or a corrupted stream): {0}")]
    Codec(String),
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

fn codec(e: impl std::fmt::Debug) -> TransportError {
    TransportError::Codec(format!("{e:?}"))
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

/// One decrypted frame: its header and plaintext payload.
pub struct Frame {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn msg_type(&self) -> u8 {
        self.header.msg_type()
    }

    /// The message, parsed by SRI's parsers (borrowing the payload).
    pub fn message(&mut self) -> Result<AnyMessage<'_>, parsers_sv2::ParserError> {
        AnyMessage::try_from((self.header, self.payload.as_mut_slice()))
    }
}

/// The reading half after the handshake.
pub struct FrameReader<R> {
    rd: R,
    decoder: NoiseDecoder,
    state: Option<TransportDecryptState>,
    /// Bytes read from the socket and not yet given to the decoder (`start..`): one read takes
    /// every frame that has arrived, instead of one read per header and per payload. Given back
    /// once all of it is taken, so an idle connection holds no read buffer.
    inbuf: Vec<u8>,
    start: usize,
    /// Bytes taken since the last whole frame, and the most allowed.
    in_frame: usize,
    limit: usize,
}

/// The writing half: messages are encoded into `out` and written together by [`FrameWriter::flush`].
pub struct FrameWriter<W> {
    wr: W,
    encoder: NoiseEncoder,
    state: TransportEncryptState,
    out: Vec<u8>,
    /// Bytes of `out` already written (a flush cancelled midway goes on from here).
    sent: usize,
}

/// Bytes of one handshake message arriving, within `timeout`.
async fn read_handshake<R: AsyncRead + Unpin, X: codec_sv2::ExpectsHandshakeMessage>(
    rd: &mut R,
    decoder: &mut NoiseDecoder,
    timeout: Duration,
) -> Result<HandshakeMessage, TransportError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut buf = vec![0u8; decoder.writable_len()];
        match tokio::time::timeout_at(deadline, rd.read_exact(&mut buf)).await {
            Err(_) => return Err(TransportError::HandshakeTimeout(timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(TransportError::Closed),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        decoder.writable().copy_from_slice(&buf);
        match decoder.next_handshake_frame::<X>().map_err(codec)? {
            Decoded::Frame(m) => return Ok(m),
            Decoded::Incomplete(_) => {}
        }
    }
}

/// The pool's side of the handshake: reads the initiator's ephemeral key, answers with the
/// static key and the certificate signed by the authority key.
pub async fn accept<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    responder: Box<Responder>,
    timeout: Duration,
    limit: usize,
) -> Result<(FrameReader<R>, FrameWriter<W>), TransportError> {
    let mut decoder = NoiseDecoder::new();
    let mut encoder = NoiseEncoder::new();
    let first = read_handshake::<R, Responder>(&mut rd, &mut decoder, timeout).await?;
    let payload: [u8; ELLSWIFT_ENCODING_SIZE] = first
        .payload()
        .try_into()
        .map_err(|_| TransportError::Handshake("first handshake message has the wrong size".into()))?;
    let (second, transport) =
        Handshake::responder(responder).step_1(payload).map_err(|e| TransportError::Handshake(format!("{e:?}")))?;
    let bytes = encoder.encode_handshake(second);
    tokio::time::timeout(timeout, wr.write_all(bytes.as_ref()))
        .await
        .map_err(|_| TransportError::HandshakeTimeout(timeout))??;
    let (enc, dec) = transport.split();
    Ok(halves(rd, wr, decoder, encoder, enc, dec, limit))
}

/// The client's side: sends an ephemeral key, checks the pool's certificate against the
/// authority key the initiator was made with.
pub async fn connect<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    initiator: Box<Initiator>,
    timeout: Duration,
    limit: usize,
) -> Result<(FrameReader<R>, FrameWriter<W>), TransportError> {
    let mut decoder = NoiseDecoder::new();
    let mut encoder = NoiseEncoder::new();
    let (first, sent) =
        Handshake::initiator(initiator).step_0().map_err(|e| TransportError::Handshake(format!("{e:?}")))?;
    wr.write_all(encoder.encode_handshake(first).as_ref()).await?;
    let second = read_handshake::<R, codec_sv2::InitiatorSent>(&mut rd, &mut decoder, timeout).await?;
    let payload: [u8; INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE] = second
        .payload()
        .try_into()
        .map_err(|_| TransportError::Handshake("second handshake message has the wrong size".into()))?;
    let transport = sent.step_2(payload).map_err(|e| {
        TransportError::Handshake(format!("the pool's certificate is not signed by the expected authority key ({e:?})"))
    })?;
    let (enc, dec) = transport.split();
    Ok(halves(rd, wr, decoder, encoder, enc, dec, limit))
}

fn halves<R, W>(
    rd: R,
    wr: W,
    decoder: NoiseDecoder,
    encoder: NoiseEncoder,
    enc: TransportEncryptState,
    dec: TransportDecryptState,
    limit: usize,
) -> (FrameReader<R>, FrameWriter<W>) {
    (
        FrameReader { rd, decoder, state: Some(dec), inbuf: Vec::new(), start: 0, in_frame: 0, limit },
        FrameWriter { wr, encoder, state: enc, out: Vec::with_capacity(512), sent: 0 },
    )
}

impl<R: AsyncRead + ReadReady + Unpin> FrameReader<R> {
    /// The next whole frame. Cancellation-safe: bytes read before a cancel are kept.
    pub async fn read_frame(&mut self) -> Result<Frame, TransportError> {
        loop {
            let want = self.decoder.writable_len();
            if self.in_frame + want > self.limit {
                return Err(TransportError::Oversized { read: self.in_frame, limit: self.limit });
            }
            while self.inbuf.len() - self.start < want {
                if self.start > 0 && self.inbuf.capacity() - self.start < want.max(READ_BUF) {
                    // Room for the rest of this piece: move what is buffered to the front.
                    self.inbuf.drain(..self.start);
                    self.start = 0;
                }
                if self.inbuf.capacity() == 0 {
                    // Nothing held: wait for bytes before taking a buffer (cancel-safe), so a
                    // connection waiting for its next frame holds none.
                    std::future::poll_fn(|cx| self.rd.poll_read_ready(cx)).await?;
                }
                // Read into spare capacity (nothing zeroed first): at least the piece wanted.
                self.inbuf.reserve(want.max(READ_BUF) - (self.inbuf.len() - self.start));
                let n = self.rd.read_buf(&mut self.inbuf).await?;
                if n == 0 {
                    let read = self.in_frame + self.inbuf.len() - self.start;
                    return Err(if read == 0 { TransportError::Closed } else { TransportError::Truncated(read) });
                }
            }
            self.decoder.writable().copy_from_slice(&self.inbuf[self.start..self.start + want]);
            self.start += want;
            if self.start == self.inbuf.len() {
                // All taken: the buffer goes back (allocated again by the next read).
                self.inbuf = Vec::new();
                self.start = 0;
            }
            self.in_frame += want;
            let state = self.state.take().ok_or_else(|| TransportError::Codec("decryption state lost".into()))?;
            match self.decoder.next_transport_frame(state).map_err(codec)? {
                Decrypted::Frame(mut f, state) => {
                    self.state = Some(state);
                    self.in_frame = 0;
                    return Ok(Frame { header: f.header(), payload: f.payload().to_vec() });
                }
                Decrypted::Incomplete(_, state) => self.state = Some(state),
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Encrypts `msg` into the outgoing buffer (sent by [`FrameWriter::flush`]).
    pub fn push(&mut self, msg: AnyMessage<'_>) -> Result<(), TransportError> {
        let frame = MessageFrame::try_from(msg).map_err(|e| TransportError::Encode(format!("{e:?}")))?;
        let bytes = self
            .encoder
            .encode_transport(frame, &mut self.state)
            .map_err(|e| TransportError::Encode(format!("{e:?}")))?;
        self.out.extend_from_slice(bytes.as_ref());
        Ok(())
    }

    /// Encrypts a frame built from its parts, whatever the message type (tests use it to send
    /// what a well-behaved client never would).
    pub fn push_raw(&mut self, ext_type: u16, msg_type: u8, payload: &[u8]) -> Result<(), TransportError> {
        let len = u32::try_from(payload.len()).ok().filter(|l| *l < 1 << 24).ok_or_else(|| {
            TransportError::Encode(format!("payload of {} bytes is over the 24-bit length", payload.len()))
        })?;
        let mut bytes = Vec::with_capacity(6 + payload.len());
        bytes.extend_from_slice(&ext_type.to_le_bytes());
        bytes.push(msg_type);
        bytes.extend_from_slice(&len.to_le_bytes()[..3]);
        bytes.extend_from_slice(payload);
        let frame = framing_sv2::framing::SerializedFrame::from_bytes(bytes)
            .map_err(|e| TransportError::Encode(format!("{e:?}")))?;
        let out = self
            .encoder
            .encode_transport(frame, &mut self.state)
            .map_err(|e| TransportError::Encode(format!("{e:?}")))?;
        self.out.extend_from_slice(out.as_ref());
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
        if !self.out.is_empty() {
            self.out.clear();
            self.sent = 0;
            if self.out.capacity() > 64 * 1024 {
                self.out.shrink_to(512);
            }
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
mod tests {
    use super::*;
    use crate::sv2::keys::AuthorityKey;

    /// A Noise pair over an in-memory pipe: (client halves, pool halves).
    async fn pair(
        pool_key: &AuthorityKey,
        pinned: &[u8; 32],
    ) -> (
        Result<
            (
                FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
                FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
            ),
            TransportError,
        >,
        Result<
            (
                FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
                FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
            ),
            TransportError,
        >,
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let responder =
            Responder::from_authority_kp(pool_key.public(), pool_key.secret(), Duration::from_secs(3600)).unwrap();
        let initiator = Initiator::from_raw_k(*pinned).unwrap();
        let t = Duration::from_secs(5);
        tokio::join!(connect(ar, aw, initiator, t, 1 << 20), accept(br, bw, responder, t, 16 * 1024))
    }

    /// SetupConnection as the spec lays it out, byte by byte (protocol u8, min/max version u16
    /// LE, flags u32 LE, then five STR0_255 and a u16 port between them).
    fn recorded_setup_connection() -> Vec<u8> {
        let mut p = vec![0u8]; // mining protocol
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0b100u32.to_le_bytes());
        let s = |p: &mut Vec<u8>, t: &str| {
            p.push(t.len() as u8);
            p.extend_from_slice(t.as_bytes());
        };
        s(&mut p, "127.0.0.1");
        p.extend_from_slice(&3336u16.to_le_bytes());
        s(&mut p, "Bitaxe");
        s(&mut p, "BM1370");
        s(&mut p, "esp-miner v2.9");
        s(&mut p, "");
        p
    }

    #[tokio::test]
    async fn a_recorded_setup_connection_crosses_the_encrypted_link_and_parses() {
        let key = AuthorityKey::generate().unwrap();
        let (client, pool) = pair(&key, key.public()).await;
        let ((_, mut cw), (mut pr, _)) = (client.unwrap(), pool.unwrap());
        let payload = recorded_setup_connection();
        cw.push_raw(0, 0x00, &payload).unwrap();
        cw.flush().await.unwrap();
        let mut f = pr.read_frame().await.unwrap();
        assert_eq!((f.msg_type(), f.header.ext_type(), f.payload.clone()), (0x00, 0, payload));
        match f.message().unwrap() {
            AnyMessage::Common(parsers_sv2::CommonMessages::SetupConnection(m)) => {
                assert_eq!((m.min_version, m.max_version, m.flags, m.endpoint_port), (2, 2, 0b100, 3336));
                assert_eq!(m.vendor.as_utf8_or_hex(), "Bitaxe");
                assert_eq!(m.firmware.as_utf8_or_hex(), "esp-miner v2.9");
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_handshake_is_refused_by_a_client_pinning_another_key() {
        let key = AuthorityKey::generate().unwrap();
        let other = AuthorityKey::generate().unwrap();
        let (client, _pool) = pair(&key, other.public()).await;
        let e = client.err().expect("another key must be refused").to_string();
        assert!(e.contains("not signed by the expected authority key"), "{e}");
    }

    #[tokio::test]
    async fn frames_above_the_limit_and_cut_frames_are_errors() {
        let key = AuthorityKey::generate().unwrap();
        let (client, pool) = pair(&key, key.public()).await;
        let ((_, mut cw), (mut pr, _)) = (client.unwrap(), pool.unwrap());
        cw.push_raw(0, 0x1f, &vec![7u8; 20_000]).unwrap();
        cw.flush().await.unwrap();
        assert!(matches!(pr.read_frame().await, Err(TransportError::Oversized { limit: 16384, .. })));

        let (client, pool) = pair(&key, key.public()).await;
        let ((_, mut cw), (mut pr, _)) = (client.unwrap(), pool.unwrap());
        cw.push_raw(0, 0x13, &[1u8; 500]).unwrap();
        cw.truncate_pending(300);
        cw.close().await;
        assert!(matches!(pr.read_frame().await, Err(TransportError::Truncated(n)) if n > 0 && n <= 300));
    }
}
