//! The connection to PostgreSQL, plain or TLS as `dburl`'s `sslmode` says, with libpq's
//! meanings (`config::dburl`). TLS is rustls with the ring provider, as everywhere in the pool,
//! through `tokio-postgres-rustls` (the sync client runs the async one underneath).
//!
//! - disable: plain. allow: plain, then TLS if the plain connection fails.
//! - prefer (the default): TLS when the server offers it, plain otherwise or if TLS fails.
//! - require: TLS or nothing; the certificate is not checked (as libpq without a root
//!   certificate), unless `sslrootcert` is given: then as verify-ca.
//! - verify-ca: the certificate chains to `sslrootcert`; verify-full: and names the host
//!   (its subjectAltName: a DNS name or the IP address `dburl` connects to).
//!
//! A certificate of `sslrootcert` presented as the server's own is trusted as the root it is
//! (the self-signed certificate of PostgreSQL's documentation, `openssl req -x509`, carries
//! CA:TRUE, which webpki alone refuses as a server's); verify-full still checks its names.

use std::sync::Arc;

use anyhow::{Context, Result};
use postgres::config::SslMode as PgSslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::dburl::{DbUrl, RootCert, SslMode};

/// Connects as `url` says, with `cfg` (parsed from `url.rest`, timeouts set). `shown` names the
/// database in errors (no password). A root certificate that cannot be read is an error in every
/// mode that may use TLS (never a silent fall back to plain).
pub fn connect(cfg: &mut postgres::Config, url: &DbUrl, shown: &str) -> Result<postgres::Client> {
    let what = || format!("connecting to {shown} with {}", url.describe());
    if url.sslmode == SslMode::Disable {
        return cfg.ssl_mode(PgSslMode::Disable).connect(postgres::NoTls).with_context(what);
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(url).with_context(what)?);
    let plain = |cfg: &mut postgres::Config| cfg.ssl_mode(PgSslMode::Disable).connect(postgres::NoTls);
    match url.sslmode {
        SslMode::Allow => match plain(cfg) {
            Ok(c) => Ok(c),
            Err(e) => cfg
                .ssl_mode(PgSslMode::Require)
                .connect(tls)
                .with_context(|| format!("plain: {e}; then TLS"))
                .with_context(what),
        },
        SslMode::Prefer => match cfg.ssl_mode(PgSslMode::Prefer).connect(tls) {
            Ok(c) => Ok(c),
            Err(e) => plain(cfg).with_context(|| format!("TLS: {e}; then plain")).with_context(what),
        },
        _ => cfg.ssl_mode(PgSslMode::Require).connect(tls).with_context(what),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `url`'s mode and root certificates.
pub fn client_config(url: &DbUrl) -> Result<rustls::ClientConfig> {
    let check = match (&url.sslrootcert, url.sslmode) {
        (None, _) => Check::Nothing,
        (Some(_), SslMode::VerifyFull) => Check::ChainAndName,
        (Some(_), _) => Check::Chain,
    };
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    match &url.sslrootcert {
        Some(RootCert::File(path)) => {
            for c in crate::tls::load_certs(path, "dburl's sslrootcert")? {
                roots.add(c.clone()).with_context(|| {
                    format!("dburl's sslrootcert {}: a certificate rustls cannot use", path.display())
                })?;
                pinned.push(c);
            }
        }
        Some(RootCert::System) => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        None => {}
    }
    let provider = provider();
    let verifier = PgVerifier { check, roots, pinned, provider: provider.clone() };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// require/prefer/allow without `sslrootcert`: encrypted, the certificate taken as it comes.
    Nothing,
    /// verify-ca (and require/prefer/allow with `sslrootcert`).
    Chain,
    /// verify-full.
    ChainAndName,
}

/// libpq's certificate checks on rustls's parts. The handshake's signatures are always checked
/// (the server proves it holds the key of the certificate it sent, whatever the mode).
#[derive(Debug)]
struct PgVerifier {
    check: Check,
    roots: rustls::RootCertStore,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PgVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        let algs = self.provider.signature_verification_algorithms.all;
        let chained =
            rustls::client::verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, algs);
        match chained {
            Ok(()) => {}
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {}
            Err(e) => return Err(e),
        }
        if self.check == Check::ChainAndName {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with CA:TRUE for `names`, as `openssl req -x509` makes one.
    fn self_signed_ca(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().der().clone()
    }

    fn verifier(check: Check, root: &CertificateDer<'static>) -> PgVerifier {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        PgVerifier { check, roots, pinned: vec![root.clone()], provider: provider() }
    }

    /// The server's own self-signed certificate as `sslrootcert` (PostgreSQL's documented simple
    /// setup): trusted as the root it is; verify-full still checks the name; require checks
    /// nothing; another certificate is refused.
    #[test]
    fn a_self_signed_root_is_trusted_as_itself() {
        let server = self_signed_ca(&["127.0.0.1"]);
        let other = self_signed_ca(&["127.0.0.1"]);
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let dns = ServerName::try_from("db.example").unwrap();
        let now = UnixTime::now();
        let v = |check, root: &CertificateDer<'static>, cert: &CertificateDer<'_>, name: &ServerName<'_>| {
            verifier(check, root).verify_server_cert(cert, &[], name, &[], now).map(|_| ())
        };
        assert!(v(Check::Chain, &server, &server, &ip).is_ok());
        assert!(v(Check::Chain, &server, &server, &dns).is_ok(), "verify-ca: the name is not checked");
        assert!(v(Check::ChainAndName, &server, &server, &ip).is_ok());
        let e = v(Check::ChainAndName, &server, &server, &dns).unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
        assert!(v(Check::Chain, &other, &server, &ip).is_err(), "another root");
        assert!(v(Check::Nothing, &other, &server, &dns).is_ok(), "require: nothing checked");
    }
}
