//! The transport against SRI's codec_sv2, both ways, and its refusals.

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

type Pipe = (tokio::io::ReadHalf<tokio::io::DuplexStream>, tokio::io::WriteHalf<tokio::io::DuplexStream>);
type Halves = (
    FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
);

/// Frames sealed by SRI's `codec_sv2` (over `sri`, with its cipher states) open with ours,
/// and ours open with it, both ways, from empty to several chunks.
async fn cross_frames_with_codec_sv2(
    (mut pr, mut pw): Halves,
    (mut ar, mut aw): Pipe,
    mut enc: codec_sv2::TransportEncryptState,
    mut dec: codec_sv2::TransportDecryptState,
) {
    use codec_sv2::{Decrypted, NoiseDecoder, NoiseEncoder};
    let (mut encoder, mut decoder) = (NoiseEncoder::new(), NoiseDecoder::new());
    let sizes = [0usize, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17];
    for (i, &n) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..n).map(|j| (j * 7 + i) as u8).collect();
        // SRI seals, we open.
        let mut bytes = vec![0x00, 0x80, 0x1b];
        bytes.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        bytes.extend_from_slice(&payload);
        let frame = framing_sv2::framing::SerializedFrame::from_bytes(bytes).unwrap();
        let sealed = encoder.encode_transport(frame, &mut enc).unwrap();
        aw.write_all(sealed.as_ref()).await.unwrap();
        let f = pr.next_frame().await.unwrap();
        assert_eq!(
            (f.header.ext_type(), f.header.msg_type(), &f.payload[..]),
            (0x8000, 0x1b, &payload[..]),
            "{n} bytes"
        );
        // We seal, SRI opens.
        pw.push_raw(0x8000, 0x1c, &payload).unwrap();
        pw.flush().await.unwrap();
        let mut state = dec;
        let got = loop {
            let mut piece = vec![0u8; decoder.writable_len()];
            ar.read_exact(&mut piece).await.unwrap();
            decoder.writable().copy_from_slice(&piece);
            match decoder.next_transport_frame(state).unwrap() {
                Decrypted::Frame(mut f, s) => {
                    state = s;
                    break (f.header().ext_type(), f.header().msg_type(), f.payload().to_vec());
                }
                Decrypted::Incomplete(_, s) => state = s,
            }
        };
        dec = state;
        assert_eq!(got, (0x8000, 0x1c, payload), "{n} bytes");
    }
}

/// SRI's initiator (codec_sv2 over noise_sv2) against our pool side: the handshake completes
/// and frames cross both ways: ours is the same wire.
#[tokio::test]
async fn frames_cross_to_and_from_sris_codec_as_initiator() {
    use codec_sv2::Handshake;
    let key = AuthorityKey::generate().unwrap();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (mut ar, mut aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let responder = Responder::from_authority_kp(key.public(), key.secret(), Duration::from_secs(3600)).unwrap();
    let pool = tokio::spawn(accept(br, bw, responder, Duration::from_secs(5), 1 << 20));
    let sri = noise_sv2::Initiator::from_raw_k(*key.public()).unwrap();
    let (first, sent) = Handshake::initiator(sri).step_0().unwrap();
    aw.write_all(first.payload()).await.unwrap();
    let mut second = [0u8; ACT_2_LEN];
    ar.read_exact(&mut second).await.unwrap();
    let (enc, dec) = sent.step_2(second).unwrap().split();
    let pool = pool.await.unwrap().unwrap();
    cross_frames_with_codec_sv2(pool, (ar, aw), enc, dec).await;
}

/// SRI's responder (codec_sv2 over noise_sv2, as SRI's pool and JDS answer) against our
/// client side.
#[tokio::test]
async fn frames_cross_to_and_from_sris_codec_as_responder() {
    use codec_sv2::Handshake;
    let key = AuthorityKey::generate().unwrap();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (mut ar, mut aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let initiator = Initiator::from_raw_k(*key.public()).unwrap();
    let client = tokio::spawn(connect(br, bw, initiator, Duration::from_secs(5), 1 << 20));
    let sri = noise_sv2::Responder::from_authority_kp(key.public(), key.secret(), Duration::from_secs(3600)).unwrap();
    let mut first = [0u8; ACT_1_LEN];
    ar.read_exact(&mut first).await.unwrap();
    let (second, transport) = Handshake::responder(sri).step_1(first).unwrap();
    aw.write_all(second.payload()).await.unwrap();
    let (enc, dec) = transport.split();
    let client = client.await.unwrap().unwrap();
    cross_frames_with_codec_sv2(client, (ar, aw), enc, dec).await;
}

/// A frame changed on the way (header or payload) closes with a codec error naming the part.
#[tokio::test]
async fn a_tampered_frame_is_refused() {
    let key = AuthorityKey::generate().unwrap();
    for (at, part) in [(3, "frame header"), (SEALED_HEADER + 10, "frame payload")] {
        let (client, pool) = pair(&key, key.public()).await;
        let ((_, mut cw), (mut pr, _)) = (client.unwrap(), pool.unwrap());
        cw.push_raw(0, 0x1b, &[5u8; 40]).unwrap();
        cw.out[at] ^= 0x04;
        cw.flush().await.unwrap();
        let e = pr.read_frame().await.err().expect("a changed frame must be refused");
        assert!(matches!(e, TransportError::Codec(_)), "{e}");
        assert!(e.to_string().contains(part) && e.to_string().contains("failed authentication"), "{e}");
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
