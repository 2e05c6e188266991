//! TLS for stratum (rustls, ring provider): the pool's TLS listeners (`stratum+tls://` entries of
//! `serverurl`, with the top-level `tlscert` / `tlskey` PEM files) and the proxy's TLS
//! upstreams (`stratum+tls://` in a `proxy` entry, trusting its `tlsca` PEM or the webpki roots,
//! which ship inside the binary: no system store or network is needed).
//!
//! The server's certificate sits behind a swappable resolver: [`TlsServer::reload`] reads the
//! files again and, when they are good, new handshakes use them while connections already made
//! keep theirs (the SIGHUP path calls it; a bad file keeps the old certificate and says why).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// Time a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (`what` names the config key in errors).
pub fn load_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("{what} {}: cannot read", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{what} {}: not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!("{what} {}: no certificate (\"-----BEGIN CERTIFICATE-----\") in it", path.display());
    }
    Ok(certs)
}

/// The certificate chain and key of `tlscert` / `tlskey`, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let certs = load_certs(cert, "tlscert")?;
    let pem = std::fs::read(key).with_context(|| format!("tlskey {}: cannot read", key.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| anyhow::anyhow!("tlskey {}: no usable PEM private key in it ({e})", key.display()))?;
    CertifiedKey::from_der(certs, der, &provider()).map_err(|e| {
        anyhow::anyhow!(
            "tlscert {} and tlskey {} do not make a usable pair: {e} (is the key the certificate's own?)",
            cert.display(),
            key.display()
        )
    })
}

/// The current certificate, swapped by [`TlsServer::reload`].
#[derive(Debug)]
struct Swappable(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Swappable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The TLS side of the pool's TLS listeners.
/// The TLS servers of this process, for SIGHUP ([`reload_all`]).
static SERVING: std::sync::Mutex<Vec<std::sync::Weak<TlsServer>>> = std::sync::Mutex::new(Vec::new());

/// SIGHUP: every TLS server of this process reads its certificate and key again; a failure is
/// one error line and that server keeps its old pair.
pub fn reload_all() {
    let mut list = SERVING.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|w| w.strong_count() > 0);
    for s in list.iter().filter_map(std::sync::Weak::upgrade) {
        if let Err(e) = s.reload() {
            tracing::error!("SIGHUP: {e:#}");
        }
    }
}

pub struct TlsServer {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<Swappable>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads `tlscert` and `tlskey` (errors name the file and what is wrong with it).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<TlsServer> {
        let ck = certified_key(cert, key)?;
        let current = Arc::new(Swappable(RwLock::new(Arc::new(ck))));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        Ok(TlsServer {
            cert: cert.into(),
            key: key.into(),
            current,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The TLS server of `cfg`, when a listener asks for TLS (`None` otherwise).
    pub fn from_config(cfg: &crate::config::Config) -> anyhow::Result<Option<Arc<TlsServer>>> {
        if !cfg.listeners.iter().any(|l| l.tls) {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&cfg.tlscert, &cfg.tlskey) else {
            bail!("config {}: a TLS listener needs \"tlscert\" and \"tlskey\"", cfg.path.display());
        };
        let s = Arc::new(TlsServer::load(cert, key)?);
        tracing::info!("TLS listeners use certificate {} (key {})", cert.display(), key.display());
        SERVING.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&s));
        Ok(Some(s))
    }

    /// Reads `tlscert` and `tlskey` again: new handshakes use them from now on. On error the
    /// certificate in use stays (and the error says why the new one was not taken).
    pub fn reload(&self) -> anyhow::Result<()> {
        let ck = certified_key(&self.cert, &self.key).context("TLS certificate not reloaded, the old one stays")?;
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        tracing::info!("TLS certificate reloaded from {}", self.cert.display());
        Ok(())
    }

    /// The end-entity certificate served now (DER).
    pub fn current_cert(&self) -> CertificateDer<'static> {
        self.current.0.read().unwrap_or_else(|p| p.into_inner()).cert[0].clone()
    }

    /// Runs the server side of the handshake (within [`HANDSHAKE_TIMEOUT`]).
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(io)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
            )),
        }
    }
}

/// A client configuration trusting the certificates of `ca` (PEM: a self-signed pool's own
/// certificate or its CA), or the webpki roots (Mozilla's, built in) without it. A certificate
/// listed in `ca` is also trusted as the server's own when presented as it is (pinned): the
/// self-signed certificate `openssl req -x509` makes carries CA:TRUE, which webpki refuses as a
/// server's certificate (`CaUsedAsEndEntity`).
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    match ca {
        Some(path) => {
            for c in load_certs(path, "tlsca")? {
                roots
                    .add(c.clone())
                    .with_context(|| format!("tlsca {}: a certificate rustls cannot use", path.display()))?;
                pinned.push(c);
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("TLS certificate verifier")?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki { pinned, webpki }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// webpki's verdict, except that a server presenting exactly a certificate of `tlsca` is
/// trusted whatever its CA flag, name or dates say: the operator named that very certificate,
/// and the handshake's signature (checked as always) proves the server holds its key.
#[derive(Debug)]
struct PinnedOrWebPki {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(v) => Ok(v),
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The name a `host:port` is checked against: its host (a DNS name or an IP address).
pub fn server_name(hostport: &str) -> anyhow::Result<ServerName<'static>> {
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| anyhow::anyhow!("{host:?} is no TLS server name: {e}"))
}

/// Connects to `hostport` and runs the client side of the TLS handshake (within
/// [`HANDSHAKE_TIMEOUT`]); errors say which step failed (certificate errors name rustls's reason).
pub async fn connect(
    hostport: &str,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = server_name(hostport)?;
    let tcp = TcpStream::connect(hostport).await.with_context(|| format!("cannot connect to {hostport}"))?;
    let _ = tcp.set_nodelay(true);
    let hs = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, hs).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => bail!("TLS handshake with {hostport} failed: {e}"),
        Err(_) => bail!("TLS handshake with {hostport}: no answer within {HANDSHAKE_TIMEOUT:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Start-up errors name the key and the file; a mismatched pair is refused; a reload takes
    /// the new certificate for new handshakes and keeps the old one when the new files are bad.
    #[tokio::test]
    async fn load_errors_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = self_signed(dir.path(), "a");
        let (c2, k2) = self_signed(dir.path(), "b");
        let missing = dir.path().join("nope.pem");
        let e = TlsServer::load(&missing, &k1).unwrap_err();
        assert!(format!("{e:#}").contains("tlscert") && format!("{e:#}").contains("nope.pem"), "{e:#}");
        let e = TlsServer::load(&c1, &missing).unwrap_err();
        assert!(format!("{e:#}").starts_with("tlskey"), "{e:#}");
        let e = TlsServer::load(&k1, &k1).unwrap_err();
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
        let e = TlsServer::load(&c1, &c1).unwrap_err();
        assert!(format!("{e:#}").contains("no usable PEM private key"), "{e:#}");
        let e = TlsServer::load(&c1, &k2).unwrap_err();
        assert!(format!("{e:#}").contains("do not make a usable pair"), "{e:#}");

        // Serve c1; a client trusting c1 connects; after reload with c2 a client trusting c2
        // connects and one trusting only c1 is refused.
        let server = Arc::new(TlsServer::load(&c1, &k1).unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let s2 = server.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                let s = s2.clone();
                tokio::spawn(async move {
                    if let Ok(mut t) = s.accept(tcp).await {
                        use tokio::io::AsyncWriteExt;
                        let _ = t.write_all(b"hi\n").await;
                        let _ = t.shutdown().await;
                    }
                });
            }
        });
        let (trust1, trust2) = (client_config(Some(&c1)).unwrap(), client_config(Some(&c2)).unwrap());
        connect(&addr, trust1.clone()).await.unwrap();
        assert!(connect(&addr, trust2.clone()).await.is_err());
        std::fs::copy(&c2, dir.path().join("a.crt")).unwrap();
        std::fs::copy(&k2, dir.path().join("a.key")).unwrap();
        server.reload().unwrap();
        connect(&addr, trust2.clone()).await.unwrap();
        let e = connect(&addr, trust1).await.unwrap_err();
        assert!(format!("{e:#}").contains("invalid peer certificate"), "{e:#}");
        // A bad file: the reload fails and the certificate in use stays.
        std::fs::write(dir.path().join("a.key"), "garbage").unwrap();
        let before = server.current_cert();
        assert!(server.reload().is_err());
        assert_eq!(server.current_cert(), before);
        connect(&addr, trust2).await.unwrap();
    }

    /// The self-signed certificate made the usual way (`openssl req -x509`, which sets CA:TRUE)
    /// works as `tlsca`: it is pinned; another such certificate is still refused.
    #[tokio::test]
    async fn an_openssl_req_x509_certificate_works_as_tlsca() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let (c, k) = (dir.path().join(format!("{name}.crt")), dir.path().join(format!("{name}.key")));
            let out = std::process::Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
                .args(["-subj", "/CN=pool.example", "-addext", "subjectAltName=IP:127.0.0.1"])
                .arg("-keyout")
                .arg(&k)
                .arg("-out")
                .arg(&c)
                .output()
                .expect("openssl (contrib/setup.sh installs it)");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            (c, k)
        };
        let (c1, k1) = make("a");
        let (c2, _) = make("b");
        let text = String::from_utf8(
            std::process::Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(&c1)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(text.contains("CA:TRUE"), "openssl req -x509 makes a CA certificate: {text}");
        let server = Arc::new(TlsServer::load(&c1, &k1).unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, _) = l.accept().await.unwrap();
                let s = server.clone();
                tokio::spawn(async move {
                    let _ = s.accept(tcp).await;
                });
            }
        });
        connect(&addr, client_config(Some(&c1)).unwrap()).await.unwrap();
        let e = connect(&addr, client_config(Some(&c2)).unwrap()).await.unwrap_err();
        assert!(format!("{e:#}").contains("invalid peer certificate"), "{e:#}");
    }

    #[test]
    fn names_and_roots() {
        assert!(matches!(server_name("127.0.0.1:3333").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("[::1]:3333").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("pool.example.org:3333").unwrap(), ServerName::DnsName(_)));
        assert!(server_name("bad name:1").is_err());
        client_config(None).unwrap();
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(format!("{e:#}").starts_with("tlsca /nonexistent/ca.pem: cannot read"), "{e:#}");
    }
}
