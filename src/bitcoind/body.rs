//! The `submitblock` request body: a block's hex with the JSON-RPC request around it, held in
//! parts that are sent as they are. A found block's body is the request's head with the hex of
//! the block's first bytes (header, transaction count, coinbase: small, made when it is found),
//! then the template's transactions as the hex kept since the template came (shared, not
//! copied), then the tail. Its length is known at once, so the request goes out with a
//! `Content-Length` and the first byte leaves before anything of the size of the block has been
//! made or copied (the parts are written as they are, vectored). Pure but for the HTTP body it
//! becomes ([`SubmitBody::into_http`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// The start of a `submitblock` request body, up to the block's hex.
const HEAD: &str = r#"{"jsonrpc":"1.0","id":"ckpool","method":"submitblock","params":["#;
/// After the block's hex.
const TAIL: &[u8] = b"\"]}";

/// A `submitblock` request body, in parts; cloned for each node and round at the cost of a few
/// reference counts.
#[derive(Clone, Debug)]
pub struct SubmitBody {
    /// The request's bytes, in order; none is empty.
    parts: Vec<Bytes>,
    /// Where the block's hex starts in the first part (0: the text given was not hex; there
    /// is no hex to save).
    hex_from: usize,
    /// Told when a request made from this body (any clone) has handed its last part to the
    /// socket, or has given up before that ([`SubmitBody::sent`]).
    sent: Arc<Notify>,
}

impl SubmitBody {
    /// A found block: its first bytes (hex-encoded here) and the hex of the rest, as kept.
    pub fn of_block(first: &[u8], rest_hex: Bytes) -> SubmitBody {
        let mut head = Vec::with_capacity(HEAD.len() + 1 + first.len() * 2);
        head.extend_from_slice(HEAD.as_bytes());
        head.push(b'"');
        crate::hex::encode_to_vec(first, &mut head);
        let parts = [Bytes::from(head), rest_hex, Bytes::from_static(TAIL)];
        SubmitBody {
            parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
            hex_from: HEAD.len() + 1,
            sent: Arc::default(),
        }
    }

    /// A block's hex as text (read back from logdir/blocks, `ckpool submitblock`): hex needs
    /// no escaping; a text that is not hex is escaped as JSON (the node will say what it is).
    pub fn of_hex(block_hex: &str) -> SubmitBody {
        let mut body = Vec::with_capacity(HEAD.len() + block_hex.len() + 4);
        body.extend_from_slice(HEAD.as_bytes());
        let hex = block_hex.bytes().all(|b| b.is_ascii_hexdigit());
        if hex {
            body.push(b'"');
            body.extend_from_slice(block_hex.as_bytes());
        } else {
            body.extend_from_slice(serde_json::Value::from(block_hex).to_string().as_bytes());
            body.pop(); // the closing quote: the tail has it
        }
        SubmitBody {
            parts: vec![Bytes::from(body), Bytes::from_static(TAIL)],
            hex_from: if hex { HEAD.len() + 1 } else { 0 },
            sent: Arc::default(),
        }
    }

    /// Told once the first request made from this body (or a clone) has handed all its parts
    /// to the connection (the first bytes have left; the rest is in the socket's buffer or being
    /// written), or has ended before that; a waiter that comes later is told at once (a permit
    /// is kept). The block task starts the hex's save on it, so that writing the block's file
    /// does not compete with the request for the CPU before the node has it.
    pub fn sent(&self) -> Arc<Notify> {
        self.sent.clone()
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The block's hex, in order, as the parts that hold it (no copy); empty when the text given
    /// was not hex.
    pub fn block_hex(&self) -> Vec<Bytes> {
        if self.hex_from == 0 {
            return Vec::new();
        }
        let last = self.parts.len() - 1; // the tail
        let mut out = vec![self.parts[0].slice(self.hex_from..)];
        out.extend(self.parts[1..last].iter().cloned());
        out.retain(|p| !p.is_empty());
        out
    }

    /// The whole body in one buffer (a copy: for tests and small uses).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }

    /// The HTTP request body: the parts as its frames, its exact length known (so the request
    /// carries a `Content-Length`).
    pub fn into_http(self) -> reqwest::Body {
        let left = self.len() as u64;
        reqwest::Body::wrap(Frames { parts: self.parts.into_iter(), left, sent: Some(self.sent) })
    }
}

/// The parts as an HTTP body, one frame each; tells `sent` when the last is taken or the body
/// is dropped unread.
struct Frames {
    parts: std::vec::IntoIter<Bytes>,
    left: u64,
    sent: Option<Arc<Notify>>,
}

impl Frames {
    fn tell_sent(&mut self) {
        if let Some(n) = self.sent.take() {
            n.notify_one();
        }
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.tell_sent();
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let frame = this.parts.next().map(|p| {
            this.left -= p.len() as u64;
            Ok(Frame::data(p))
        });
        if this.left == 0 {
            this.tell_sent();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The body written by hand is the JSON serde writes for the same request, and the hex in it
    /// is the block's, from either kind of body.
    #[test]
    fn bodies_are_the_json_request() {
        for hex in ["00ff", "", "zz\"\\"] {
            let body = SubmitBody::of_hex(hex);
            let ours: Value = serde_json::from_slice(&body.to_vec()).unwrap();
            let theirs = json!({"jsonrpc": "1.0", "id": "ckpool", "method": "submitblock", "params": [hex]});
            assert_eq!(ours, theirs, "{hex}");
            assert_eq!(body.len(), body.to_vec().len());
            let saved: Vec<u8> = body.block_hex().concat();
            assert_eq!(saved, if hex.starts_with('z') { &b""[..] } else { hex.as_bytes() }, "{hex}");
        }
        let body = SubmitBody::of_block(&[0x00, 0xff, 0x12], Bytes::from_static(b"abcd"));
        assert_eq!(body.to_vec(), SubmitBody::of_hex("00ff12abcd").to_vec());
        assert_eq!(body.block_hex().concat(), b"00ff12abcd");
        // A block without transactions: no empty part.
        let body = SubmitBody::of_block(&[0x01], Bytes::new());
        assert_eq!(body.to_vec(), SubmitBody::of_hex("01").to_vec());
        assert_eq!(body.block_hex(), [Bytes::from_static(b"01")]);
    }

    /// As an HTTP body: the parts as they are, in order, with the exact length up front.
    #[tokio::test]
    async fn http_body_is_the_parts_with_their_length() {
        use http_body_util::BodyExt;
        let rest = Bytes::from(vec![b'a'; 100_000]);
        let body = SubmitBody::of_block(&[7; 80], rest.clone());
        let whole = body.to_vec();
        let sent = body.sent();
        let mut frames =
            Frames { parts: body.parts.clone().into_iter(), left: body.len() as u64, sent: Some(body.sent()) };
        assert_eq!(frames.size_hint().exact(), Some(whole.len() as u64));
        let mut got = Vec::new();
        let mut shared = false;
        while let Some(f) = frames.frame().await {
            let data = f.unwrap().into_data().unwrap();
            shared |= data.as_ptr() == rest.as_ptr();
            got.extend_from_slice(&data);
        }
        assert!(frames.is_end_stream());
        assert!(frames.sent.is_none(), "told once the last part is taken");
        sent.notified().await; // the permit kept for a later waiter
        assert_eq!(got, whole);
        assert!(shared, "the transactions' hex is sent from where it is kept, not copied");
        // A request that ends before its body is read tells it too.
        let body = SubmitBody::of_hex("00");
        let sent = body.sent();
        drop(body.into_http());
        sent.notified().await;
    }
}
