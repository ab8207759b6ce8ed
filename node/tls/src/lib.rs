//! TLS for RecipeStore's gRPC ports, with rustls.
//!
//! One cluster CA signs every certificate. A certificate's subject common
//! name is its identity: members present [`MEMBER_NAME`], and the peer port
//! serves Raft and forwarding to members only; administrators (the operator,
//! `recipectl` and backup jobs) present [`ADMIN_NAME`], which the admin API
//! accepts besides members. Clients of the client port present any
//! certificate of the CA, or none unless the node requires one.

mod accept;
mod authority;
mod pem;

pub use accept::accept;
pub use authority::Authority;
pub use authority::Issued;
pub use pem::Pem;
pub use pem::PemFiles;
pub use rustls::ServerConfig;

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;

/// The common name of a member's certificate.
pub const MEMBER_NAME: &str = "recipestore-member";
/// The common name of an administrator's certificate.
pub const ADMIN_NAME: &str = "recipestore-admin";

/// Why TLS cannot be set up from the given files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("the {what} {path} is not valid PEM: {detail}")]
    Malformed {
        what: &'static str,
        path: String,
        detail: String,
    },
    #[error("the certificate {path} expired at {not_after} (UTC)")]
    Expired { path: String, not_after: String },
    #[error("the certificate and key do not go together, or the key is unusable: {0}")]
    Key(String),
    #[error("the CA {path} cannot verify certificates: {detail}")]
    Ca { path: String, detail: String },
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
}

/// Whether a server asks connecting clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate signed by the CA (mutual TLS).
    Required,
    /// Clients may present one; a client without one is served too.
    Optional,
}

/// The cryptography every config uses, named so that no process-wide
/// default has to be installed first.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config presenting `pem`'s certificate, verifying client
/// certificates against its CA, and speaking HTTP/2 (gRPC).
pub fn server_config(pem: &Pem, auth: ClientAuth) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let roots = Arc::new(pem.roots()?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let verifier = match auth {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|e| TlsError::Ca {
        path: pem.files.ca.clone(),
        detail: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Key(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pem.chain()?, pem.key()?)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client config trusting `ca` and, when given, presenting `identity`'s
/// certificate.
pub fn client_config(
    ca: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> tonic::transport::ClientTlsConfig {
    let config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    match identity {
        Some((cert, key)) => config.identity(tonic::transport::Identity::from_pem(cert, key)),
        None => config,
    }
}

/// The endpoint of `addr` (`host:port`, or a URI): `https` when `tls` is
/// given, which it then uses, `http` otherwise.
pub fn endpoint(
    addr: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = match addr.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{addr}"),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(uri)?;
    match tls {
        Some(tls) => endpoint.tls_config(tls.clone()),
        None => Ok(endpoint),
    }
}

/// The identity a verified peer certificate names: its subject's common
/// name. `None` when the connection carried no certificate or the
/// certificate has no common name.
pub fn common_name(certs: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let name = cert.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

/// Walks an error's sources for what TLS said and puts it in words a person
/// can act on: the usual mistakes (a certificate from another CA, an
/// expired one, one for another host name, none when one is required).
/// `None` when the error is not about TLS.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut source = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        let hint = if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
            Some(
                "the certificate was not signed by the CA this side trusts: check --cacert (or the node's --tls-ca)",
            )
        } else if text.contains("Expired") || text.contains("expired") {
            Some("a certificate has expired (or is not valid yet): renew it, or check the clocks")
        } else if text.contains("NotValidForName") || text.contains("not valid for name") {
            Some(
                "the node's certificate does not name the address dialled: connect by a name or IP the certificate lists",
            )
        } else if text.contains("CertificateRequired") || text.contains("certificate required") {
            Some("the node requires a client certificate: pass --cert and --key")
        } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
            Some("the other side does not speak TLS: drop --cacert, or enable TLS on the node")
        } else {
            None
        };
        if hint.is_some() {
            return hint;
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use rustls::CertificateError;

    use super::*;

    /// A handshake failure as it reaches a caller: rustls' error inside an
    /// I/O error inside the transport's.
    fn failed(error: CertificateError) -> std::io::Error {
        std::io::Error::other(rustls::Error::InvalidCertificate(error))
    }

    #[test]
    fn the_usual_mistakes_are_named() {
        let hint = |e: CertificateError| explain(&failed(e)).unwrap_or("none");
        assert!(hint(CertificateError::UnknownIssuer).contains("--cacert"));
        assert!(hint(CertificateError::Expired).contains("expired"));
        assert!(hint(CertificateError::NotValidForName).contains("does not name"));
        let required = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(explain(&required).unwrap_or("none").contains("--cert"));
        let unrelated = std::io::Error::other("connection refused");
        assert_eq!(explain(&unrelated), None);
    }
}
