//! Certificates, keys and CAs read from PEM files, checked on reading so a
//! mistake is named where it is made, not at the first handshake.

use std::path::Path;
use std::path::PathBuf;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::TlsError;

/// Where a node's or a client's certificate, key and CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Names of the files, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileNames {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

/// The contents of a [`PemFiles`], read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
    pub(crate) files: FileNames,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

impl Pem {
    /// Reads the three files and checks that each holds what it should and
    /// that the certificate has not expired.
    pub fn read(files: &PemFiles) -> Result<Self, TlsError> {
        let pem = Self {
            cert: read("certificate", &files.cert)?,
            key: read("key", &files.key)?,
            ca: read("CA", &files.ca)?,
            files: FileNames {
                cert: files.cert.display().to_string(),
                key: files.key.display().to_string(),
                ca: files.ca.display().to_string(),
            },
        };
        pem.check()?;
        Ok(pem)
    }

    /// A CA file alone, checked: for clients that present no certificate.
    pub fn read_ca(path: &Path) -> Result<Vec<u8>, TlsError> {
        let ca = read("CA", path)?;
        roots(&path.display().to_string(), &ca)?;
        Ok(ca)
    }

    /// PEM held in memory (a Secret's data), named `source` in messages.
    pub fn from_memory(source: &str, cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, TlsError> {
        let pem = Self {
            cert: cert.to_vec(),
            key: key.to_vec(),
            ca: ca.to_vec(),
            files: FileNames {
                cert: format!("{source} certificate"),
                key: format!("{source} key"),
                ca: format!("{source} CA"),
            },
        };
        pem.check()?;
        Ok(pem)
    }

    fn check(&self) -> Result<(), TlsError> {
        self.chain()?;
        self.key()?;
        self.roots()?;
        if let Some(not_after) = self.not_after()
            && not_after < time::OffsetDateTime::now_utc()
        {
            return Err(TlsError::Expired {
                path: self.files.cert.clone(),
                not_after: not_after.to_string(),
            });
        }
        Ok(())
    }

    /// The certificate chain, leaf first.
    pub(crate) fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        certificates("certificate", &self.files.cert, &self.cert)
    }

    pub(crate) fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
                what: "key",
                path: self.files.key.clone(),
                expected: "private key",
            },
            e => TlsError::Malformed {
                what: "key",
                path: self.files.key.clone(),
                detail: e.to_string(),
            },
        })
    }

    /// The CA's certificates as trust anchors.
    pub(crate) fn roots(&self) -> Result<RootCertStore, TlsError> {
        roots(&self.files.ca, &self.ca)
    }

    /// A client config trusting the CA and presenting the certificate.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        crate::client_config(&self.ca, Some((&self.cert, &self.key)))
    }

    /// Whether the certificate is still valid `for_at_least` from now.
    pub fn lasts(&self, for_at_least: std::time::Duration) -> bool {
        self.not_after()
            .is_some_and(|end| end > time::OffsetDateTime::now_utc() + for_at_least)
    }

    /// When the certificate (the leaf) expires.
    pub fn not_after(&self) -> Option<time::OffsetDateTime> {
        let chain = self.chain().ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
        Some(cert.validity().not_after.to_datetime())
    }
}

fn roots(path: &str, ca: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("CA", path, ca)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn certificates(
    what: &'static str,
    path: &str,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Malformed {
            what,
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "certificate",
        });
    }
    Ok(certs)
}
