//! The share path's messages by hand (issue 31): SubmitShares.Extended read straight from the
//! opened payload, SubmitShares.Success and .Error written straight into the sealed frame.
//! SRI's generic parser and encoder (`parsers_sv2`, `binary_sv2`) spend more on one share than
//! the cipher does; every other message still goes through them. The tests hold these to SRI's
//! bytes and SRI's fields, on arbitrary input.

use mining_sv2::{
    SubmitSharesSuccess, CHANNEL_BIT_SUBMIT_SHARES_ERROR, CHANNEL_BIT_SUBMIT_SHARES_SUCCESS,
    MESSAGE_TYPE_SUBMIT_SHARES_ERROR, MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED, MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS,
};
use tokio::io::AsyncWrite;

use super::transport::{FrameWriter, TransportError};

/// The extension type of a channel message of the mining protocol (the channel bit set).
const CHANNEL_MSG: u16 = 0x8000;
/// SubmitShares.Extended's fixed fields: six u32.
const FIXED: usize = 24;

/// A SubmitShares.Extended's fields, borrowing the extranonce from the payload.
#[derive(Debug, PartialEq, Eq)]
pub struct SubmitExtended<'a> {
    pub channel_id: u32,
    pub sequence_number: u32,
    pub job_id: u32,
    pub nonce: u32,
    pub ntime: u32,
    pub version: u32,
    pub extranonce: &'a [u8],
}

fn u32_at(p: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]])
}

/// The frame's SubmitShares.Extended, when it is one and is exactly as the spec lays it out
/// (six u32 LE, then a B0_32: one length byte of at most 32, that many bytes, nothing after).
/// Anything else is `None`, and goes to SRI's parser (which names what is wrong).
pub fn submit_extended(ext_type: u16, msg_type: u8, p: &[u8]) -> Option<SubmitExtended<'_>> {
    if msg_type != MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED || ext_type & !CHANNEL_MSG != 0 || p.len() <= FIXED {
        return None;
    }
    let n = p[FIXED] as usize;
    if n > 32 || p.len() != FIXED + 1 + n {
        return None;
    }
    Some(SubmitExtended {
        channel_id: u32_at(p, 0),
        sequence_number: u32_at(p, 4),
        job_id: u32_at(p, 8),
        nonce: u32_at(p, 12),
        ntime: u32_at(p, 16),
        version: u32_at(p, 20),
        extranonce: &p[FIXED + 1..],
    })
}

fn ext_type(channel_bit: bool) -> u16 {
    if channel_bit {
        CHANNEL_MSG
    } else {
        0
    }
}

/// SubmitShares.Success's payload: four u32 and a u64, little-endian.
pub const SUCCESS_LEN: usize = 20;

pub fn encode_success(ok: &SubmitSharesSuccess, dst: &mut [u8]) {
    dst[0..4].copy_from_slice(&ok.channel_id.to_le_bytes());
    dst[4..8].copy_from_slice(&ok.last_sequence_number.to_le_bytes());
    dst[8..12].copy_from_slice(&ok.new_submits_accepted_count.to_le_bytes());
    dst[12..20].copy_from_slice(&ok.new_shares_sum.to_le_bytes());
}

/// SubmitShares.Error's payload: two u32, then the code as a STR0_255.
pub fn error_len(code: &str) -> usize {
    8 + 1 + code.len().min(255)
}

pub fn encode_error(channel_id: u32, seq: u32, code: &str, dst: &mut [u8]) {
    let code = &code.as_bytes()[..code.len().min(255)];
    dst[0..4].copy_from_slice(&channel_id.to_le_bytes());
    dst[4..8].copy_from_slice(&seq.to_le_bytes());
    dst[8] = code.len() as u8;
    dst[9..].copy_from_slice(code);
}

pub fn push_success<W: AsyncWrite + Unpin>(
    wr: &mut FrameWriter<W>,
    ok: &SubmitSharesSuccess,
) -> Result<(), TransportError> {
    let (ext, t) = (ext_type(CHANNEL_BIT_SUBMIT_SHARES_SUCCESS), MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS);
    wr.push_with(ext, t, SUCCESS_LEN, |dst| encode_success(ok, dst))
}

pub fn push_error<W: AsyncWrite + Unpin>(
    wr: &mut FrameWriter<W>,
    channel_id: u32,
    seq: u32,
    code: &str,
) -> Result<(), TransportError> {
    let (ext, t) = (ext_type(CHANNEL_BIT_SUBMIT_SHARES_ERROR), MESSAGE_TYPE_SUBMIT_SHARES_ERROR);
    wr.push_with(ext, t, error_len(code), |dst| encode_error(channel_id, seq, code, dst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use binary_sv2::{Str0255, B032};
    use framing_sv2::framing::{EncodableFrame, MessageFrame};
    use mining_sv2::{SubmitSharesError, SubmitSharesExtended};
    use parsers_sv2::{AnyMessage, Mining};
    use proptest::prelude::*;

    /// SRI's bytes of a message: header and payload.
    fn sri_bytes(m: AnyMessage<'_>) -> Vec<u8> {
        let f = MessageFrame::try_from(m).unwrap();
        let mut v = vec![0u8; f.encoded_length()];
        f.encode_into(&mut v).unwrap();
        v
    }

    fn ours(ext: u16, t: u8, len: usize, write: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut v = vec![0u8; 6 + len];
        v[..2].copy_from_slice(&ext.to_le_bytes());
        v[2] = t;
        v[3..6].copy_from_slice(&(len as u32).to_le_bytes()[..3]);
        write(&mut v[6..]);
        v
    }

    /// SRI's parse of a payload as a frame of this header, as the session's other path takes it.
    fn sri_parse(ext: u16, t: u8, p: &[u8]) -> Option<SubmitExtended<'static>> {
        let mut bytes = ours(ext, t, p.len(), |d| d.copy_from_slice(p));
        let header = framing_sv2::header::Header::from_bytes(&bytes[..6]).unwrap();
        match AnyMessage::try_from((header, &mut bytes[6..])) {
            Ok(AnyMessage::Mining(Mining::SubmitSharesExtended(m))) => Some(SubmitExtended {
                channel_id: m.channel_id,
                sequence_number: m.sequence_number,
                job_id: m.job_id,
                nonce: m.nonce,
                ntime: m.ntime,
                version: m.version,
                extranonce: m.extranonce.as_bytes().to_vec().leak(),
            }),
            _ => None,
        }
    }

    proptest! {
        /// Well-formed submits, as SRI encodes them: ours reads the same fields.
        #[test]
        fn a_submit_encoded_by_sri_reads_the_same(
            f in any::<[u32; 6]>(), en in proptest::collection::vec(any::<u8>(), 0..=32),
        ) {
            let m = SubmitSharesExtended {
                channel_id: f[0], sequence_number: f[1], job_id: f[2], nonce: f[3], ntime: f[4], version: f[5],
                extranonce: B032::new(&en[..]).unwrap(),
            };
            let bytes = sri_bytes(AnyMessage::Mining(Mining::SubmitSharesExtended(m)));
            let ext = u16::from_le_bytes([bytes[0], bytes[1]]);
            let got = submit_extended(ext, bytes[2], &bytes[6..]).expect("a well-formed submit");
            let sri = sri_parse(ext, bytes[2], &bytes[6..]);
            prop_assert_eq!(Some(&got), sri.as_ref());
            prop_assert_eq!(got.extranonce, &en[..]);
        }

        /// Arbitrary payloads (a valid prefix, then anything): whenever ours reads a submit, SRI
        /// reads the same one; whenever SRI reads one of the exact length, so does ours.
        #[test]
        fn arbitrary_payloads_read_as_sri_reads_them(
            f in any::<[u32; 6]>(), n in prop_oneof![0u8..=32, any::<u8>()],
            tail in proptest::collection::vec(any::<u8>(), 0..70), cut in prop_oneof![Just(None), (0usize..100).prop_map(Some)],
            ext in prop_oneof![Just(0u16), Just(0x8000u16), any::<u16>()],
            t in prop_oneof![Just(MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED), any::<u8>()],
        ) {
            let mut p: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
            p.push(n);
            p.extend_from_slice(&tail);
            // Cut at the length the length byte announces, or anywhere.
            p.truncate(cut.unwrap_or(FIXED + 1 + n as usize));
            let ours = submit_extended(ext, t, &p);
            let sri = sri_parse(ext, t, &p);
            if let Some(o) = &ours {
                prop_assert_eq!(Some(o), sri.as_ref());
            } else if let Some(s) = &sri {
                // SRI may take a payload with bytes after the message; ours sends it to SRI.
                prop_assert!(p.len() != FIXED + 1 + s.extranonce.len(), "SRI read {:?} from {:?}", s, p);
            }
        }

        /// Our answers are SRI's bytes.
        #[test]
        fn answers_encode_as_sri_encodes_them(
            f in any::<[u32; 4]>(), sum in any::<u64>(), code in "[a-z-]{0,40}",
        ) {
            let ok = SubmitSharesSuccess {
                channel_id: f[0], last_sequence_number: f[1], new_submits_accepted_count: f[2], new_shares_sum: sum,
            };
            let want = sri_bytes(AnyMessage::Mining(Mining::SubmitSharesSuccess(ok.clone())));
            let got = ours(ext_type(CHANNEL_BIT_SUBMIT_SHARES_SUCCESS), MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS, SUCCESS_LEN, |d| encode_success(&ok, d));
            prop_assert_eq!(got, want);
            let err = SubmitSharesError { channel_id: f[0], sequence_number: f[3], error_code: Str0255::new(code.as_bytes()).unwrap() };
            let want = sri_bytes(AnyMessage::Mining(Mining::SubmitSharesError(err)));
            let got = ours(ext_type(CHANNEL_BIT_SUBMIT_SHARES_ERROR), MESSAGE_TYPE_SUBMIT_SHARES_ERROR, error_len(&code), |d| encode_error(f[0], f[3], &code, d));
            prop_assert_eq!(got, want);
        }
    }
}
