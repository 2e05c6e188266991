//! A Stratum V2 Job Declaration client (the Noise initiator on a pool's `sv2jdurl`): sets up a
//! full-template connection, allocates tokens, declares jobs, provides missing transactions and
//! reads the answers as owned values. Used by the tests; a proxy declaring jobs builds on it.

use std::net::SocketAddr;

use super::noise::Initiator;
use binary_sv2::{Seq064K, Str0255, B016M, B0255, B064K, U256};
use common_messages_sv2::Protocol;
use job_declaration_sv2::{AllocateMiningJobToken, DeclareMiningJob, ProvideMissingTransactionsSuccess};
use parsers_sv2::{AnyMessage, CommonMessages, JobDeclaration};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::transport::{self, FrameReader, FrameWriter};
use super::HANDSHAKE_TIMEOUT;

/// SetupConnection flag: this client declares full templates (its transactions).
pub const DECLARE_TX_DATA: u32 = 0b1;

/// What the server sent, as owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JdEvent {
    SetupOk,
    SetupRefused { code: String },
    Token { request_id: u32, token: Vec<u8>, outputs: Vec<u8> },
    Declared { request_id: u32, token: Vec<u8> },
    Refused { request_id: u32, code: String, details: String },
    Missing { request_id: u32, positions: Vec<u16> },
    Other(String),
}

/// A declaration's parts.
pub struct Declaration<'a> {
    pub request_id: u32,
    pub token: &'a [u8],
    pub version: u32,
    pub coinbase_prefix: &'a [u8],
    pub coinbase_suffix: &'a [u8],
    /// wtxids, internal byte order.
    pub wtxids: &'a [[u8; 32]],
}

pub struct JdClient {
    rd: FrameReader<OwnedReadHalf>,
    wr: FrameWriter<OwnedWriteHalf>,
}

impl JdClient {
    /// Connects, checks the server's certificate against `authority`, sets up with `flags`
    /// (the answer is the first event).
    pub async fn connect(addr: SocketAddr, authority: &[u8; 32], flags: u32) -> anyhow::Result<JdClient> {
        let stream = TcpStream::connect(addr).await.map_err(|e| anyhow::anyhow!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let initiator = Initiator::from_raw_k(*authority).map_err(|e| anyhow::anyhow!("authority key: {e}"))?;
        let (rd, wr) = stream.into_split();
        let (rd, wr) = transport::connect(rd, wr, initiator, HANDSHAKE_TIMEOUT, 1 << 20).await?;
        let mut c = JdClient { rd, wr };
        let m = super::client::setup_message(Protocol::JobDeclarationProtocol, (2, 2), flags, b"jd client");
        c.send(AnyMessage::Common(CommonMessages::SetupConnection(m))).await?;
        Ok(c)
    }

    pub async fn send(&mut self, m: AnyMessage<'_>) -> anyhow::Result<()> {
        self.wr.push(m)?;
        self.wr.flush().await?;
        Ok(())
    }

    pub async fn allocate(&mut self, user: &str, request_id: u32) -> anyhow::Result<()> {
        let m = AllocateMiningJobToken { user_identifier: Str0255::new(user.as_bytes()).map_err(too_big)?, request_id };
        self.send(AnyMessage::JobDeclaration(JobDeclaration::AllocateMiningJobToken(m))).await
    }

    pub async fn declare(&mut self, d: &Declaration<'_>) -> anyhow::Result<()> {
        let wtxids: Vec<U256<'_>> = d.wtxids.iter().map(|w| U256::new(&w[..]).expect("32 bytes")).collect();
        let m = DeclareMiningJob {
            request_id: d.request_id,
            mining_job_token: B0255::new(d.token).map_err(too_big)?,
            version: d.version,
            coinbase_tx_prefix: B064K::new(d.coinbase_prefix).map_err(too_big)?,
            coinbase_tx_suffix: B064K::new(d.coinbase_suffix).map_err(too_big)?,
            wtxid_list: Seq064K::new(wtxids).map_err(too_big)?,
            excess_data: B064K::new(&[][..]).map_err(too_big)?,
        };
        self.send(AnyMessage::JobDeclaration(JobDeclaration::DeclareMiningJob(m))).await
    }

    /// Answers ProvideMissingTransactions with `txs` (serialized, in the order asked).
    pub async fn provide(&mut self, request_id: u32, txs: &[Vec<u8>]) -> anyhow::Result<()> {
        let list: Vec<B016M<'_>> = txs.iter().map(|t| B016M::new(&t[..]).expect("under 16 MB")).collect();
        let m =
            ProvideMissingTransactionsSuccess { request_id, transaction_list: Seq064K::new(list).map_err(too_big)? };
        self.send(AnyMessage::JobDeclaration(JobDeclaration::ProvideMissingTransactionsSuccess(m))).await
    }

    pub async fn next_event(&mut self) -> anyhow::Result<JdEvent> {
        let mut frame = self.rd.read_frame().await?;
        let msg = frame.message().map_err(|e| anyhow::anyhow!("unreadable message: {e:?}"))?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(match msg {
            AnyMessage::Common(CommonMessages::SetupConnectionSuccess(_)) => JdEvent::SetupOk,
            AnyMessage::Common(CommonMessages::SetupConnectionError(m)) => {
                JdEvent::SetupRefused { code: text(m.error_code.as_bytes()) }
            }
            AnyMessage::JobDeclaration(JobDeclaration::AllocateMiningJobTokenSuccess(m)) => JdEvent::Token {
                request_id: m.request_id,
                token: m.mining_job_token.as_bytes().to_vec(),
                outputs: m.coinbase_outputs.as_bytes().to_vec(),
            },
            AnyMessage::JobDeclaration(JobDeclaration::DeclareMiningJobSuccess(m)) => {
                JdEvent::Declared { request_id: m.request_id, token: m.new_mining_job_token.as_bytes().to_vec() }
            }
            AnyMessage::JobDeclaration(JobDeclaration::DeclareMiningJobError(m)) => JdEvent::Refused {
                request_id: m.request_id,
                code: text(m.error_code.as_bytes()),
                details: text(m.error_details.as_bytes()),
            },
            AnyMessage::JobDeclaration(JobDeclaration::ProvideMissingTransactions(m)) => {
                JdEvent::Missing { request_id: m.request_id, positions: m.unknown_tx_position_list.into_inner() }
            }
            other => JdEvent::Other(format!("{other:?}").chars().take(80).collect()),
        })
    }
}

fn too_big(e: binary_sv2::Error) -> anyhow::Error {
    anyhow::anyhow!("a field is over its SV2 size limit: {e:?}")
}
