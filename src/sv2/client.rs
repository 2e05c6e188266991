//! A Stratum V2 client (the Noise initiator): connects with the pool's authority key, sets up a
//! mining connection, opens channels, reads jobs as owned values and submits shares. Used by
//! `ckpool bench --sv2` and the tests; a miner would build on it the same way.

use std::net::SocketAddr;

use super::noise::Initiator;
use binary_sv2::{Str0255, B032, U256};
use common_messages_sv2::{Protocol, SetupConnection};
use mining_sv2::{
    OpenExtendedMiningChannel, OpenStandardMiningChannel, SubmitSharesExtended, SubmitSharesStandard, UpdateChannel,
};
use parsers_sv2::{AnyMessage, CommonMessages, Mining};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::transport::{self, Frame, FrameReader, FrameWriter};
use super::{HANDSHAKE_TIMEOUT, POOL_FRAME_LIMIT};
use crate::work::merkle;

/// SetupConnection flag: the client rolls version bits (as translators and ASICs do).
pub const REQUIRES_VERSION_ROLLING: u32 = 0b100;

/// What the pool sent, as owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    SetupOk {
        flags: u32,
    },
    SetupRefused {
        code: String,
        flags: u32,
    },
    ExtendedOpened {
        request_id: u32,
        channel: u32,
        target: [u8; 32],
        extranonce_prefix: Vec<u8>,
        extranonce_size: u16,
        /// The group channel the pool put it in (jobs may come for the group).
        group: u32,
    },
    StandardOpened {
        request_id: u32,
        channel: u32,
        target: [u8; 32],
        extranonce_prefix: Vec<u8>,
    },
    OpenRefused {
        request_id: u32,
        code: String,
    },
    ExtendedJob(ExtendedJob),
    StandardJob {
        channel: u32,
        job_id: u32,
        min_ntime: Option<u32>,
        version: u32,
        merkle_root: [u8; 32],
    },
    PrevHash {
        channel: u32,
        job_id: u32,
        prev_hash: [u8; 32],
        min_ntime: u32,
        nbits: u32,
    },
    Target {
        channel: u32,
        target: [u8; 32],
    },
    Accepted {
        channel: u32,
        last_seq: u32,
        count: u32,
        sum: u64,
    },
    Rejected {
        channel: u32,
        seq: u32,
        code: String,
    },
    UpdateRefused {
        channel: u32,
        code: String,
    },
    /// SetExtranoncePrefix: the channel's jobs from now on take this prefix.
    ExtranoncePrefix {
        channel: u32,
        prefix: Vec<u8>,
    },
    /// CloseChannel from the pool.
    ChannelClosed {
        channel: u32,
        code: String,
    },
    /// Any other message, by name.
    /// SetCustomMiningJob taken (Job Declaration): the job id shares name.
    CustomJobSet {
        channel: u32,
        request_id: u32,
        job_id: u32,
    },
    CustomJobRefused {
        channel: u32,
        request_id: u32,
        code: String,
    },
    Other(String),
}

/// A NewExtendedMiningJob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedJob {
    pub channel: u32,
    pub job_id: u32,
    /// `None`: a future job, active at the SetNewPrevHash naming it.
    pub min_ntime: Option<u32>,
    pub version: u32,
    pub version_rolling: bool,
    pub merkle_path: Vec<[u8; 32]>,
    pub coinbase_prefix: Vec<u8>,
    pub coinbase_suffix: Vec<u8>,
}

impl ExtendedJob {
    /// The merkle root of this job's coinbase with `extranonce` (prefix and rolled part).
    pub fn merkle_root(&self, extranonce: &[u8]) -> [u8; 32] {
        let mut tx = Vec::with_capacity(self.coinbase_prefix.len() + extranonce.len() + self.coinbase_suffix.len());
        tx.extend_from_slice(&self.coinbase_prefix);
        tx.extend_from_slice(extranonce);
        tx.extend_from_slice(&self.coinbase_suffix);
        merkle::root_from_branches(&merkle::sha256d(&tx), &self.merkle_path)
    }
}

/// A block header from its parts (for miners and tests).
pub fn header(
    version: u32,
    prev_hash: &[u8; 32],
    merkle_root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 80] {
    let mut h = [0u8; 80];
    h[0..4].copy_from_slice(&version.to_le_bytes());
    h[4..36].copy_from_slice(prev_hash);
    h[36..68].copy_from_slice(merkle_root);
    h[68..72].copy_from_slice(&ntime.to_le_bytes());
    h[72..76].copy_from_slice(&nbits.to_le_bytes());
    h[76..80].copy_from_slice(&nonce.to_le_bytes());
    h
}

fn text(s: &Str0255<'_>) -> String {
    s.as_utf8_or_hex()
}

fn u256(v: &U256<'_>) -> [u8; 32] {
    v.to_array()
}

impl Event {
    /// The owned event of a frame.
    pub fn of(mut frame: Frame) -> anyhow::Result<Event> {
        let t = frame.msg_type();
        let m = frame.message().map_err(|e| anyhow::anyhow!("unreadable message type 0x{t:02x}: {e:?}"))?;
        Ok(match m {
            AnyMessage::Common(CommonMessages::SetupConnectionSuccess(m)) => Event::SetupOk { flags: m.flags },
            AnyMessage::Common(CommonMessages::SetupConnectionError(m)) => {
                Event::SetupRefused { code: text(&m.error_code), flags: m.flags }
            }
            AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(m)) => Event::ExtendedOpened {
                request_id: m.request_id,
                channel: m.channel_id,
                target: u256(&m.target),
                extranonce_prefix: m.extranonce_prefix.as_bytes().to_vec(),
                extranonce_size: m.extranonce_size,
                group: m.group_channel_id,
            },
            AnyMessage::Mining(Mining::OpenStandardMiningChannelSuccess(m)) => Event::StandardOpened {
                request_id: m.request_id,
                channel: m.channel_id,
                target: u256(&m.target),
                extranonce_prefix: m.extranonce_prefix.as_bytes().to_vec(),
            },
            AnyMessage::Mining(Mining::OpenMiningChannelError(m)) => {
                Event::OpenRefused { request_id: m.request_id, code: text(&m.error_code) }
            }
            AnyMessage::Mining(Mining::NewExtendedMiningJob(m)) => Event::ExtendedJob(ExtendedJob {
                channel: m.channel_id,
                job_id: m.job_id,
                min_ntime: m.min_ntime.clone().into_inner(),
                version: m.version,
                version_rolling: m.version_rolling_allowed,
                merkle_path: m.merkle_path.clone().into_inner().iter().map(u256).collect(),
                coinbase_prefix: m.coinbase_tx_prefix.as_bytes().to_vec(),
                coinbase_suffix: m.coinbase_tx_suffix.as_bytes().to_vec(),
            }),
            AnyMessage::Mining(Mining::NewMiningJob(m)) => Event::StandardJob {
                channel: m.channel_id,
                job_id: m.job_id,
                min_ntime: m.min_ntime.clone().into_inner(),
                version: m.version,
                merkle_root: u256(&m.merkle_root),
            },
            AnyMessage::Mining(Mining::SetNewPrevHash(m)) => Event::PrevHash {
                channel: m.channel_id,
                job_id: m.job_id,
                prev_hash: u256(&m.prev_hash),
                min_ntime: m.min_ntime,
                nbits: m.nbits,
            },
            AnyMessage::Mining(Mining::SetTarget(m)) => {
                Event::Target { channel: m.channel_id, target: u256(&m.maximum_target) }
            }
            AnyMessage::Mining(Mining::SubmitSharesSuccess(m)) => Event::Accepted {
                channel: m.channel_id,
                last_seq: m.last_sequence_number,
                count: m.new_submits_accepted_count,
                sum: m.new_shares_sum,
            },
            AnyMessage::Mining(Mining::SubmitSharesError(m)) => {
                Event::Rejected { channel: m.channel_id, seq: m.sequence_number, code: text(&m.error_code) }
            }
            AnyMessage::Mining(Mining::UpdateChannelError(m)) => {
                Event::UpdateRefused { channel: m.channel_id, code: text(&m.error_code) }
            }
            AnyMessage::Mining(Mining::SetExtranoncePrefix(m)) => {
                Event::ExtranoncePrefix { channel: m.channel_id, prefix: m.extranonce_prefix.as_bytes().to_vec() }
            }
            AnyMessage::Mining(Mining::CloseChannel(m)) => {
                Event::ChannelClosed { channel: m.channel_id, code: text(&m.reason_code) }
            }
            AnyMessage::Mining(Mining::SetCustomMiningJobSuccess(m)) => {
                Event::CustomJobSet { channel: m.channel_id, request_id: m.request_id, job_id: m.job_id }
            }
            AnyMessage::Mining(Mining::SetCustomMiningJobError(m)) => {
                Event::CustomJobRefused { channel: m.channel_id, request_id: m.request_id, code: text(&m.error_code) }
            }
            other => Event::Other(format!("{other:?}").chars().take(80).collect()),
        })
    }
}

/// This project's SetupConnection for `protocol` (the clients' own: `hardware` names which).
pub fn setup_message(
    protocol: Protocol,
    (min_version, max_version): (u16, u16),
    flags: u32,
    hardware: &'static [u8],
) -> SetupConnection<'static> {
    SetupConnection {
        protocol,
        min_version,
        max_version,
        flags,
        endpoint_host: Str0255::new(b"127.0.0.1").expect("short"),
        endpoint_port: 0,
        vendor: Str0255::new(b"ckpool-rs").expect("short"),
        hardware_version: Str0255::new(hardware).expect("short"),
        firmware: Str0255::new(env!("CARGO_PKG_VERSION").as_bytes()).expect("short"),
        device_id: Str0255::new(b"").expect("short"),
    }
}

/// One connection to an SV2 pool.
pub struct Sv2Client {
    rd: FrameReader<OwnedReadHalf>,
    wr: FrameWriter<OwnedWriteHalf>,
    next_request: u32,
}

impl Sv2Client {
    /// Connects, checks the pool's certificate against `authority` (x-only public key) and
    /// sends nothing else.
    pub async fn handshake(addr: SocketAddr, authority: &[u8; 32]) -> anyhow::Result<Sv2Client> {
        let stream = TcpStream::connect(addr).await.map_err(|e| anyhow::anyhow!("connect {addr}: {e}"))?;
        Sv2Client::handshake_on(stream, authority).await
    }

    /// [`Sv2Client::handshake`] on a connection made by the caller (tests: a small receive
    /// buffer, for a client slow to read).
    pub async fn handshake_on(stream: TcpStream, authority: &[u8; 32]) -> anyhow::Result<Sv2Client> {
        let _ = stream.set_nodelay(true);
        let initiator = Initiator::from_raw_k(*authority).map_err(|e| anyhow::anyhow!("authority key: {e}"))?;
        let (rd, wr) = stream.into_split();
        let (rd, wr) = transport::connect(rd, wr, initiator, HANDSHAKE_TIMEOUT, POOL_FRAME_LIMIT).await?;
        Ok(Sv2Client { rd, wr, next_request: 1 })
    }

    /// [`Sv2Client::handshake`], then SetupConnection for the mining protocol with `flags`;
    /// fails unless the pool answers Success.
    pub async fn connect(addr: SocketAddr, authority: &[u8; 32], flags: u32) -> anyhow::Result<Sv2Client> {
        let stream = TcpStream::connect(addr).await.map_err(|e| anyhow::anyhow!("connect {addr}: {e}"))?;
        Sv2Client::connect_on(stream, authority, flags).await
    }

    /// [`Sv2Client::connect`] on a connection made by the caller.
    pub async fn connect_on(stream: TcpStream, authority: &[u8; 32], flags: u32) -> anyhow::Result<Sv2Client> {
        let mut c = Sv2Client::handshake_on(stream, authority).await?;
        c.setup(2, 2, flags).await?;
        match c.next_event().await? {
            Event::SetupOk { .. } => Ok(c),
            other => anyhow::bail!("SetupConnection not accepted: {other:?}"),
        }
    }

    /// Sends SetupConnection (the answer is the next event).
    pub async fn setup(&mut self, min_version: u16, max_version: u16, flags: u32) -> anyhow::Result<()> {
        let m = setup_message(Protocol::MiningProtocol, (min_version, max_version), flags, b"sv2 client");
        self.send(AnyMessage::Common(CommonMessages::SetupConnection(m))).await
    }

    pub async fn send(&mut self, m: AnyMessage<'_>) -> anyhow::Result<()> {
        self.push(m)?;
        self.flush().await
    }

    /// Queues a message (sent by [`Sv2Client::flush`]).
    pub fn push(&mut self, m: AnyMessage<'_>) -> anyhow::Result<()> {
        self.wr.push(m).map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.wr.flush().await.map_err(|e| anyhow::anyhow!("write: {e}"))
    }

    /// Raw bytes on the encrypted connection's socket (for tests of what the pool does with
    /// garbage after the handshake).
    pub fn writer(&mut self) -> &mut FrameWriter<OwnedWriteHalf> {
        &mut self.wr
    }

    /// The reading and writing halves, to wait on the next frame while a write is pending
    /// (both are cancel-safe).
    pub fn halves(&mut self) -> (&mut FrameReader<OwnedReadHalf>, &mut FrameWriter<OwnedWriteHalf>) {
        (&mut self.rd, &mut self.wr)
    }

    pub async fn next_frame(&mut self) -> anyhow::Result<Frame> {
        Ok(self.rd.read_frame().await?)
    }

    pub async fn next_event(&mut self) -> anyhow::Result<Event> {
        Event::of(self.next_frame().await?)
    }

    fn request_id(&mut self) -> u32 {
        self.next_request += 1;
        self.next_request
    }

    /// Asks for an extended channel; the answer is a later event.
    pub async fn open_extended(&mut self, user: &str, hashrate: f32, min_extranonce: u16) -> anyhow::Result<u32> {
        let request_id = self.request_id();
        let m = OpenExtendedMiningChannel {
            request_id,
            user_identity: Str0255::new(user.as_bytes()).map_err(|e| anyhow::anyhow!("user: {e:?}"))?,
            nominal_hash_rate: hashrate,
            max_target: U256::new(&[0xff; 32]).expect("32"),
            min_extranonce_size: min_extranonce,
        };
        self.send(AnyMessage::Mining(Mining::OpenExtendedMiningChannel(m))).await?;
        Ok(request_id)
    }

    /// Asks for a standard channel with `max_target` (little-endian); the answer is a later event.
    pub async fn open_standard(&mut self, user: &str, hashrate: f32, max_target: [u8; 32]) -> anyhow::Result<u32> {
        let request_id = self.request_id();
        let m = OpenStandardMiningChannel {
            request_id,
            user_identity: Str0255::new(user.as_bytes()).map_err(|e| anyhow::anyhow!("user: {e:?}"))?,
            nominal_hash_rate: hashrate,
            max_target: U256::new(&max_target).expect("32"),
        };
        self.send(AnyMessage::Mining(Mining::OpenStandardMiningChannel(m))).await?;
        Ok(request_id)
    }

    pub async fn update_channel(&mut self, channel: u32, hashrate: f32, max_target: [u8; 32]) -> anyhow::Result<()> {
        let m = UpdateChannel {
            channel_id: channel,
            nominal_hash_rate: hashrate,
            maximum_target: U256::new(&max_target).expect("32"),
        };
        self.send(AnyMessage::Mining(Mining::UpdateChannel(m))).await
    }

    /// Queues an extended share (sent by [`Sv2Client::flush`]).
    #[allow(clippy::too_many_arguments)]
    pub fn push_extended(
        &mut self,
        channel: u32,
        seq: u32,
        job_id: u32,
        nonce: u32,
        ntime: u32,
        version: u32,
        extranonce: &[u8],
    ) -> anyhow::Result<()> {
        let m = SubmitSharesExtended {
            channel_id: channel,
            sequence_number: seq,
            job_id,
            nonce,
            ntime,
            version,
            extranonce: B032::new(extranonce).map_err(|e| anyhow::anyhow!("extranonce: {e:?}"))?,
        };
        self.push(AnyMessage::Mining(Mining::SubmitSharesExtended(m)))
    }

    /// Queues a standard share (sent by [`Sv2Client::flush`]).
    pub fn push_standard(
        &mut self,
        channel: u32,
        seq: u32,
        job_id: u32,
        nonce: u32,
        ntime: u32,
        version: u32,
    ) -> anyhow::Result<()> {
        let m = SubmitSharesStandard { channel_id: channel, sequence_number: seq, job_id, nonce, ntime, version };
        self.push(AnyMessage::Mining(Mining::SubmitSharesStandard(m)))
    }
}
