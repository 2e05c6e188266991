//! The waiting write paths: a miner slow to read gets its answers written as it takes them while
//! this session goes on reading its lines (a block share behind a stalled write still leaves),
//! on a plain socket and over TLS. Reached only from `Session::write_out`'s boxed future, so an
//! idle session's task carries none of this.

use tokio::io::AsyncWriteExt;

use super::{End, Session, MAX_UNWRITTEN};
use crate::sv1::lines::LineReader;

impl Session {
    /// Writes `out` (from byte `sent` on) to a plain socket; lines that arrive while the miner is
    /// slow to read are handled meanwhile (a found block among them leaves for the block task at
    /// once), their answers queued behind, up to [`MAX_UNWRITTEN`] bytes.
    pub(super) async fn write_reading(
        &mut self,
        s: &tokio::net::TcpStream,
        reader: &mut LineReader,
        sent: usize,
    ) -> Result<(), End> {
        let mut sent = sent;
        let mut kicked = None;
        while sent < self.out.len() {
            tokio::select! {
                biased;
                r = s.writable() => {
                    r.map_err(|e| End::Kick(format!("write error: {e}")))?;
                    match s.try_write(&self.out[sent..]) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(End::Kick(format!("write error: {e}"))),
                    }
                }
                r = s.readable(), if kicked.is_none() && self.out.len() - sent < MAX_UNWRITTEN => {
                    r.map_err(|e| End::Kick(format!("read error: {e}")))?;
                    match reader.read_ready(s) {
                        Ok(0) => return Err(End::Closed),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(End::Kick(format!("read error: {e}"))),
                    }
                    kicked = self.take_lines(reader).await;
                }
            }
        }
        kicked.map_or(Ok(()), |why| Err(End::Kick(why)))
    }

    /// [`Session::write_reading`] over TLS: the stream split in two halves for the wait (so a
    /// write through rustls and a read can both be pending), `out` written and flushed while the
    /// lines that arrive are handled, their answers queued behind, up to [`MAX_UNWRITTEN`] bytes.
    pub(super) async fn write_reading_tls(
        &mut self,
        t: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        reader: &mut LineReader,
    ) -> Result<(), End> {
        let (mut rd, mut wr) = tokio::io::split(t);
        let mut sent = 0;
        let mut kicked = None;
        loop {
            tokio::select! {
                biased;
                // Everything handed to rustls: then its records flushed to the socket.
                r = async {
                    if sent < self.out.len() {
                        wr.write(&self.out[sent..]).await
                    } else {
                        wr.flush().await.map(|()| 0)
                    }
                } => {
                    let n = r.map_err(|e| End::Kick(format!("write error: {e}")))?;
                    if sent == self.out.len() {
                        break;
                    }
                    if n == 0 {
                        return Err(End::Kick("write error: the connection takes no more".into()));
                    }
                    sent += n;
                }
                r = reader.read_some(&mut rd), if kicked.is_none() && self.out.len() - sent < MAX_UNWRITTEN => {
                    match r {
                        Ok(0) => return Err(End::Closed),
                        Ok(_) => {}
                        // A client that closes without TLS close_notify has still just closed.
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(End::Closed),
                        Err(e) => return Err(End::Kick(format!("read error: {e}"))),
                    }
                    kicked = self.take_lines(reader).await;
                }
            }
        }
        kicked.map_or(Ok(()), |why| Err(End::Kick(why)))
    }

    /// The lines read while a write waits: handled (a found block leaves for the block task at
    /// once), the tally closed, the share log and statistics flushed; why the miner is to be
    /// kicked, if it is.
    async fn take_lines(&mut self, reader: &mut LineReader) -> Option<String> {
        let kicked = self.handle_lines(reader).err();
        self.close_tally();
        if !self.outbox.try_flush(&self.ctx) {
            self.outbox.send_blocks(&self.ctx).await;
        }
        kicked
    }
}
