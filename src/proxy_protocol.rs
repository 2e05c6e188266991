//! The PROXY protocol (HAProxy's `send-proxy` v1 text line and `send-proxy-v2` binary header),
//! read on listeners that ask for it (`"proxy_protocol"` in a `serverurl` entry), so that the
//! miner's own address, not the load balancer's, is used in logs, the share log and stats.
//!
//! [`parse`] is pure (no I/O, no allocation): it takes the bytes read so far and says whether they
//! hold a complete header, need more, or can never be one. [`read_header`] is the shell: it reads
//! from the socket exactly the header's bytes and no more (a v2 header's length is in its first
//! 16 bytes; a v1 line is peeked for its newline), within a size bound and a deadline, so what
//! follows (a TLS ClientHello, the miner's first line) stays in the socket for the next layer.
//!
//! Written here rather than taken from a crate (`ppp`, `proxy-header`): the part needed is ~200
//! lines, a listener must never read past the header (which those crates' stream helpers do not
//! promise), and a pure function of a byte slice is what a fuzz target and recorded vectors need.
//! Spec: haproxy's doc/proxy-protocol.txt (v1 line at most 107 bytes; v2 signature, version 2,
//! LOCAL/PROXY command, AF_INET/AF_INET6/AF_UNIX/UNSPEC over STREAM, TLVs skipped).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 header's first 12 bytes.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 line's first 6 bytes.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 line, CRLF included (the spec's bound).
pub const V1_MAX: usize = 107;
/// Largest v2 header a listener accepts (16-byte fixed part + addresses + TLVs). HAProxy sends
/// 28 (IPv4) or 52 (IPv6) bytes plus any TLVs it is configured to add.
pub const V2_MAX: usize = 16 + 1024;
/// Time a connection has to send its whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which header versions a listener takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    V1,
    V2,
    /// Either (`"proxy_protocol": true` or `"any"`).
    Any,
}

impl Accept {
    pub fn name(self) -> &'static str {
        match self {
            Accept::V1 => "v1",
            Accept::V2 => "v2",
            Accept::Any => "v1 or v2",
        }
    }

    fn allows(self, version: u8) -> bool {
        matches!((self, version), (Accept::Any, _) | (Accept::V1, 1) | (Accept::V2, 2))
    }
}

/// What a complete header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// The connection is proxied for this client (`src`) to this address (`dst`).
    Proxy { version: u8, src: SocketAddr, dst: SocketAddr },
    /// v2 LOCAL (the proxy's own health check) or v1 UNKNOWN / v2 UNSPEC or AF_UNIX addresses:
    /// no client address is given; the connection's own peer address stands.
    Local { version: u8 },
}

impl Header {
    pub fn version(&self) -> u8 {
        match self {
            Header::Proxy { version, .. } | Header::Local { version } => *version,
        }
    }
}

/// Why the bytes are no (complete) header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A header so far: at least `need` more bytes are needed (v1: the line's end is unknown,
    /// so `need` is 1).
    #[error("incomplete header ({need} more bytes needed at least)")]
    Incomplete { need: usize },
    /// The bytes start with neither signature: the client sent no PROXY header.
    #[error("no PROXY protocol header (the connection did not start with \"PROXY \" or the v2 signature)")]
    Missing,
    /// Longer than the bound (v1: 107 bytes; v2: [`V2_MAX`]).
    #[error("header longer than {0} bytes")]
    TooLong(usize),
    #[error("malformed v1 header: {0}")]
    BadV1(&'static str),
    #[error("malformed v2 header: {0}")]
    BadV2(&'static str),
}

/// Parses a PROXY header at the start of `buf`: the header and its length in bytes (the bytes
/// after it are the connection's payload). Pure: call again with more bytes on `Incomplete`.
pub fn parse(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    match buf.first() {
        None => Err(ParseError::Incomplete { need: 1 }),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ParseError::Missing),
    }
}

fn parse_v1(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    let pre = buf.len().min(V1_PREFIX.len());
    if buf[..pre] != V1_PREFIX[..pre] {
        return Err(ParseError::Missing);
    }
    let Some(nl) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ParseError::TooLong(V1_MAX))
        } else {
            Err(ParseError::Incomplete { need: (V1_PREFIX.len() + 9).saturating_sub(buf.len()).max(1) })
        };
    };
    let len = nl + 1;
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Err(ParseError::BadV1("line does not end with CRLF"));
    }
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..nl - 1]).map_err(|_| ParseError::BadV1("not ASCII"))?;
    if !line.is_ascii() || line.contains('\r') {
        return Err(ParseError::BadV1("not ASCII"));
    }
    let mut f = line.split(' ');
    let proto = f.next().unwrap_or("");
    if proto == "UNKNOWN" {
        // The rest of the line is ignored (the spec: the receiver must ignore it).
        return Ok((Header::Local { version: 1 }, len));
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ParseError::BadV1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(s), Some(d), Some(sp), Some(dp), None) = (f.next(), f.next(), f.next(), f.next(), f.next()) else {
        return Err(ParseError::BadV1("needs exactly: protocol, source, destination, source port, destination port"));
    };
    let ip = |t: &str| -> Result<IpAddr, ParseError> {
        if v6 {
            t.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| ParseError::BadV1("bad IPv6 address"))
        } else {
            t.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| ParseError::BadV1("bad IPv4 address"))
        }
    };
    let port = |t: &str| -> Result<u16, ParseError> {
        // Digits only (Rust's integer parser would take "+1"); no leading zero but "0" itself.
        if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) || (t.len() > 1 && t.starts_with('0'))
        {
            return Err(ParseError::BadV1("bad port"));
        }
        t.parse().map_err(|_| ParseError::BadV1("bad port"))
    };
    let src = SocketAddr::new(ip(s)?, port(sp)?);
    let dst = SocketAddr::new(ip(d)?, port(dp)?);
    Ok((Header::Proxy { version: 1, src, dst }, len))
}

fn parse_v2(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    let pre = buf.len().min(V2_SIGNATURE.len());
    if buf[..pre] != V2_SIGNATURE[..pre] {
        return Err(ParseError::Missing);
    }
    if buf.len() < 16 {
        return Err(ParseError::Incomplete { need: 16 - buf.len() });
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if ver_cmd >> 4 != 2 {
        return Err(ParseError::BadV2("version is not 2"));
    }
    if len > V2_MAX {
        return Err(ParseError::TooLong(V2_MAX));
    }
    if buf.len() < len {
        return Err(ParseError::Incomplete { need: len - buf.len() });
    }
    let body = &buf[16..len];
    match ver_cmd & 0x0f {
        // LOCAL: the proxy's own connection (health check); addresses, if any, are ignored.
        0 => return Ok((Header::Local { version: 2 }, len)),
        1 => {}
        _ => return Err(ParseError::BadV2("command is neither LOCAL nor PROXY")),
    }
    let (family, transport) = (fam >> 4, fam & 0x0f);
    if family != 0 && transport != 1 {
        return Err(ParseError::BadV2("transport is not STREAM"));
    }
    let (src, dst) = match family {
        // UNSPEC, or AF_UNIX (no IP to show): as LOCAL.
        0 | 3 => return Ok((Header::Local { version: 2 }, len)),
        1 => {
            let a = body.get(..12).ok_or(ParseError::BadV2("AF_INET address block shorter than 12 bytes"))?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))
        }
        2 => {
            let a = body.get(..36).ok_or(ParseError::BadV2("AF_INET6 address block shorter than 36 bytes"))?;
            let ip = |o: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&a[o..o + 16]).expect("16 bytes")));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))
        }
        _ => return Err(ParseError::BadV2("unknown address family")),
    };
    Ok((Header::Proxy { version: 2, src, dst }, len))
}

/// Why a connection on a PROXY-protocol listener was refused (one log line each).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("PROXY protocol {got} header on a listener that takes {wants} only")]
    WrongVersion { got: &'static str, wants: &'static str },
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before a complete PROXY header")]
    Closed,
    #[error("read error: {0}")]
    Io(std::io::Error),
}

/// Reads the PROXY header from a fresh connection, consuming exactly its bytes (within
/// [`HEADER_TIMEOUT`]). A header of a version the listener does not take is refused.
pub async fn read_header(stream: &mut TcpStream, accept: Accept) -> Result<Header, ReadError> {
    let header = tokio::time::timeout(HEADER_TIMEOUT, read_exactly_header(stream))
        .await
        .map_err(|_| ReadError::Timeout(HEADER_TIMEOUT))??;
    if !accept.allows(header.version()) {
        let got = if header.version() == 1 { "v1" } else { "v2" };
        return Err(ReadError::WrongVersion { got, wants: accept.name() });
    }
    Ok(header)
}

async fn read_exactly_header(stream: &mut TcpStream) -> Result<Header, ReadError> {
    let mut buf = Vec::with_capacity(64);
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadError::Closed
        } else {
            ReadError::Io(e)
        }
    };
    loop {
        let need = match parse(&buf) {
            Ok((h, len)) => {
                debug_assert_eq!(len, buf.len(), "read exactly the header");
                return Ok(h);
            }
            Err(ParseError::Incomplete { need }) => need,
            Err(e) => return Err(e.into()),
        };
        if buf.first() == Some(&b'P') && buf.len() >= V1_PREFIX.len() {
            // v1: the line's length is unknown; take what has arrived up to its newline.
            let mut peek = [0u8; V1_MAX];
            let room = V1_MAX - buf.len();
            let n = stream.peek(&mut peek[..room]).await.map_err(io)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            let take = peek[..n].iter().position(|&b| b == b'\n').map_or(n, |i| i + 1);
            let at = buf.len();
            buf.resize(at + take, 0);
            stream.read_exact(&mut buf[at..]).await.map_err(io)?;
        } else {
            // v2 (or the first bytes): exactly as many as are known to be part of the header.
            let at = buf.len();
            buf.resize(at + need, 0);
            stream.read_exact(&mut buf[at..]).await.map_err(io)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    /// A v2 header as `send-proxy-v2` writes it for a client 127.0.0.5:40000 connecting to
    /// 127.0.0.1:3333 without TLVs (handwritten from the spec; tests/tls_proxy.rs runs the
    /// real haproxy).
    const HAPROXY_V2_TCP4: [u8; 28] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c, 127, 0, 0, 5,
        127, 0, 0, 1, 0x9c, 0x40, 0x0d, 0x05,
    ];

    #[test]
    fn v1_vectors() {
        let tcp4 = b"PROXY TCP4 192.168.1.7 10.0.0.1 56324 3333\r\n{\"id\":1}";
        let (h, len) = parse(tcp4).unwrap();
        assert_eq!(len, tcp4.len() - 8);
        assert_eq!(
            h,
            Header::Proxy {
                version: 1,
                src: "192.168.1.7:56324".parse().unwrap(),
                dst: "10.0.0.1:3333".parse().unwrap()
            }
        );
        let tcp6 = b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
        let (h, len) = parse(tcp6).unwrap();
        assert_eq!(len, tcp6.len());
        assert_eq!(
            h,
            Header::Proxy { version: 1, src: "[2001:db8::1]:65535".parse().unwrap(), dst: "[::1]:0".parse().unwrap() }
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), (Header::Local { version: 1 }, 15));
        assert_eq!(parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX").unwrap().1, 35);
        // The longest TCP6 line (104 bytes) and the longest legal line (107 bytes) parse.
        let long = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(parse(long).unwrap().1, 104);
        let mut unknown = b"PROXY UNKNOWN ".to_vec();
        unknown.resize(V1_MAX - 2, b'x');
        unknown.extend_from_slice(b"\r\n");
        assert_eq!(parse(&unknown).unwrap(), (Header::Local { version: 1 }, V1_MAX));
    }

    #[test]
    fn v1_truncated_oversized_garbage() {
        let full = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        for cut in 0..full.len() {
            assert!(matches!(parse(&full[..cut]), Err(ParseError::Incomplete { need }) if need >= 1), "cut at {cut}");
        }
        assert_eq!(parse(&[b'P'; 200]), Err(ParseError::Missing));
        let mut over = b"PROXY UNKNOWN ".to_vec();
        over.resize(V1_MAX, b'x');
        assert_eq!(parse(&over), Err(ParseError::TooLong(V1_MAX)));
        over.extend_from_slice(b"\r\n");
        assert_eq!(parse(&over), Err(ParseError::TooLong(V1_MAX)), "a newline past 107 bytes is too late");
        for (bad, why) in [
            (&b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..], "CRLF"),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "exactly"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "exactly"),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "exactly"),
            (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "IPv4"),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "IPv4"),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "IPv6"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "ASCII"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n", "ASCII"),
        ] {
            match parse(bad) {
                Err(ParseError::BadV1(m)) => assert!(m.contains(why), "{:?}: {m}", String::from_utf8_lossy(bad)),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
        // A miner that speaks stratum (or TLS) straight away has no header.
        assert_eq!(parse(b"{\"id\":1,\"method\":\"mining.subscribe\"}\n"), Err(ParseError::Missing));
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0x02]), Err(ParseError::Missing));
        assert_eq!(parse(b"PROXX TCP4"), Err(ParseError::Missing));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ParseError::Missing));
    }

    #[test]
    fn v2_vectors() {
        let mut with_payload = HAPROXY_V2_TCP4.to_vec();
        with_payload.extend_from_slice(b"{\"id\":1}\n");
        let (h, len) = parse(&with_payload).unwrap();
        assert_eq!(len, 28);
        assert_eq!(
            h,
            Header::Proxy {
                version: 2,
                src: "127.0.0.5:40000".parse().unwrap(),
                dst: "127.0.0.1:3333".parse().unwrap()
            }
        );
        // IPv6 with a TLV after the addresses (PP2_TYPE_UNIQUE_ID, skipped).
        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&1234u16.to_be_bytes());
        body.extend_from_slice(&3333u16.to_be_bytes());
        body.extend_from_slice(&[0x05, 0x00, 0x03, b'a', b'b', b'c']);
        let h6 = v2(1, 0x21, &body);
        assert_eq!(
            parse(&h6).unwrap(),
            (
                Header::Proxy {
                    version: 2,
                    src: "[2001:db8::7]:1234".parse().unwrap(),
                    dst: "[::1]:3333".parse().unwrap()
                },
                16 + 36 + 6
            )
        );
        // LOCAL (haproxy's health checks), with or without an address block.
        assert_eq!(parse(&v2(0, 0x00, &[])).unwrap(), (Header::Local { version: 2 }, 16));
        assert_eq!(parse(&v2(0, 0x11, &HAPROXY_V2_TCP4[16..])).unwrap(), (Header::Local { version: 2 }, 28));
        // PROXY over UNSPEC or AF_UNIX: no IP given.
        assert_eq!(parse(&v2(1, 0x00, &[])).unwrap(), (Header::Local { version: 2 }, 16));
        assert_eq!(parse(&v2(1, 0x31, &[0; 216])).unwrap(), (Header::Local { version: 2 }, 232));
    }

    #[test]
    fn v2_truncated_oversized_garbage() {
        for cut in 0..HAPROXY_V2_TCP4.len() {
            match parse(&HAPROXY_V2_TCP4[..cut]) {
                Err(ParseError::Incomplete { need }) => {
                    assert!(need >= 1 && cut + need <= HAPROXY_V2_TCP4.len(), "cut {cut}: need {need}")
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        // The length is known from 16 bytes on: exactly the rest is asked for.
        assert_eq!(parse(&HAPROXY_V2_TCP4[..16]), Err(ParseError::Incomplete { need: 12 }));
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&huge), Err(ParseError::TooLong(V2_MAX)));
        let mut wrong = HAPROXY_V2_TCP4;
        wrong[12] = 0x11;
        assert_eq!(parse(&wrong), Err(ParseError::BadV2("version is not 2")));
        wrong[12] = 0x22;
        assert_eq!(parse(&wrong), Err(ParseError::BadV2("command is neither LOCAL nor PROXY")));
        let mut udp = HAPROXY_V2_TCP4;
        udp[13] = 0x12;
        assert_eq!(parse(&udp), Err(ParseError::BadV2("transport is not STREAM")));
        let mut fam = HAPROXY_V2_TCP4;
        fam[13] = 0x41;
        assert_eq!(parse(&fam), Err(ParseError::BadV2("unknown address family")));
        assert!(matches!(parse(&v2(1, 0x11, &[1, 2, 3])), Err(ParseError::BadV2(_))), "short AF_INET block");
        assert!(matches!(parse(&v2(1, 0x21, &[0; 35])), Err(ParseError::BadV2(_))), "short AF_INET6 block");
        let mut sig = HAPROXY_V2_TCP4;
        sig[7] = b'q';
        assert_eq!(parse(&sig), Err(ParseError::Missing));
        assert_eq!(parse(b"\r\n\r\n\0\r\nquit"), Err(ParseError::Missing));
    }

    /// Any bytes: no panic, and a header's length never exceeds the bytes given or the bounds.
    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        let seeds = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..120).prop_map(|t| [V1_PREFIX, &t].concat()),
            proptest::collection::vec(any::<u8>(), 0..120).prop_map(|t| [&V2_SIGNATURE[..], &t].concat()),
        ];
        runner
            .run(&seeds, |buf| {
                match parse(&buf) {
                    Ok((h, len)) => {
                        prop_assert!(len <= buf.len() && len <= V2_MAX);
                        // The same from exactly its bytes; no shorter prefix is a header.
                        prop_assert_eq!(parse(&buf[..len]), Ok((h, len)));
                        for cut in 0..len {
                            prop_assert!(parse(&buf[..cut]).is_err(), "a header from {} of {} bytes", cut, len);
                        }
                    }
                    Err(ParseError::Incomplete { need }) => prop_assert!(need >= 1),
                    Err(_) => {}
                }
                Ok(())
            })
            .unwrap();
    }

    /// The shell reads exactly the header: what follows stays for the next layer, whether the
    /// header comes in one piece or byte by byte; a header of the wrong version is refused.
    #[tokio::test]
    async fn read_header_leaves_the_payload() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cases: Vec<(Vec<u8>, Accept, bool)> = vec![
            (b"PROXY TCP4 10.1.2.3 10.0.0.1 5000 3333\r\nhello\n".to_vec(), Accept::V1, true),
            ([&HAPROXY_V2_TCP4[..], b"hello\n"].concat(), Accept::V2, true),
            ([&HAPROXY_V2_TCP4[..], b"hello\n"].concat(), Accept::Any, false),
            (b"PROXY TCP4 10.1.2.3 10.0.0.1 5000 3333\r\nhello\n".to_vec(), Accept::Any, false),
        ];
        for (bytes, accept, one_piece) in cases {
            let sender = tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                if one_piece {
                    s.write_all(&bytes).await.unwrap();
                } else {
                    for b in bytes {
                        s.write_all(&[b]).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                s
            });
            let (mut s, _) = l.accept().await.unwrap();
            let h = read_header(&mut s, accept).await.unwrap();
            assert!(matches!(h, Header::Proxy { .. }), "{h:?}");
            let mut rest = [0u8; 6];
            s.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"hello\n");
            drop(sender.await.unwrap());
        }
        // v1 on a v2 listener, and a stratum line on a PROXY listener: refused.
        for (bytes, accept) in [(&b"PROXY UNKNOWN\r\n"[..], Accept::V2), (b"{\"id\":1}\n", Accept::Any)] {
            let sender = tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(bytes).await.unwrap();
                s
            });
            let (mut s, _) = l.accept().await.unwrap();
            let e = read_header(&mut s, accept).await.unwrap_err();
            assert!(matches!(e, ReadError::WrongVersion { .. } | ReadError::Parse(ParseError::Missing)), "{e}");
            drop(sender.await.unwrap());
        }
    }
}
