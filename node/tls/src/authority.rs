//! A certificate authority for stores that issue their own certificates:
//! `recipectl local up --tls` and the operator when no Secret is given.

use std::time::Duration;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;

use crate::TlsError;

/// A CA: its certificate and the key that signs with it.
pub struct Authority {
    cert: String,
    issuer: Issuer<'static, KeyPair>,
    key: String,
}

/// A certificate the CA issued, with its key, in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

#[cfg(test)]
impl Issued {
    /// The certificate read back, trusting the CA that issued it.
    pub(crate) fn pem(&self, ca: &Authority) -> Result<crate::Pem, TlsError> {
        crate::Pem::from_memory(
            "issued",
            self.cert.as_bytes(),
            self.key.as_bytes(),
            ca.cert_pem().as_bytes(),
        )
    }
}

/// Backdating absorbs clock differences between the machine that issues and
/// the ones that verify.
const BACKDATE: Duration = Duration::from_secs(3600);

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + valid_for;
}

impl Authority {
    /// A new CA named `name`, valid for `valid_for`.
    pub fn generate(name: &str, valid_for: Duration) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, valid_for);
        let cert = params.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert,
            issuer: Issuer::new(params, key),
            key: key_pem,
        })
    }

    /// The CA kept as PEM (in a Secret, or on disk).
    pub fn from_pem(cert: &str, key: &str) -> Result<Self, TlsError> {
        let signing = KeyPair::from_pem(key)?;
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(cert, signing)?,
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The CA's certificate in PEM: what every side trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert
    }

    /// The CA's private key in PEM, to keep it.
    pub fn key_pem(&self) -> &str {
        &self.key
    }

    /// A certificate for `common_name`, good for both ends of a connection
    /// (members are servers and clients of each other), naming `hosts` (DNS
    /// names, wildcards, or IP addresses) for servers.
    pub fn issue(
        &self,
        common_name: &str,
        hosts: &[String],
        valid_for: Duration,
    ) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, valid_for);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pem;

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    #[test]
    fn an_issued_certificate_names_its_identity_and_reads_back() {
        let ca = Authority::generate("test CA", YEAR).unwrap();
        let member = ca
            .issue(
                crate::MEMBER_NAME,
                &["127.0.0.1".into(), "*.peers.svc".into()],
                YEAR,
            )
            .unwrap();
        let pem = member.pem(&ca).unwrap();
        assert_eq!(
            crate::common_name(&pem.chain().unwrap()).as_deref(),
            Some(crate::MEMBER_NAME)
        );
        let expires = pem.not_after().unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!(expires > now + Duration::from_secs(364 * 24 * 3600));
        crate::server_config(&pem, crate::ClientAuth::Required).unwrap();

        // Kept and read back, the CA issues certificates its old self
        // trusts.
        let again = Authority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let admin = again.issue(crate::ADMIN_NAME, &[], YEAR).unwrap();
        admin.pem(&ca).unwrap();
    }

    #[test]
    fn mistakes_in_files_are_named() {
        let ca = Authority::generate("test CA", YEAR).unwrap();
        let issued = ca.issue("x", &[], YEAR).unwrap();
        let no_cert = Pem::from_memory("bad", b"", issued.key.as_bytes(), ca.cert_pem().as_bytes());
        assert!(
            no_cert
                .unwrap_err()
                .to_string()
                .contains("holds no PEM certificate"),
        );
        let key_for_cert = Pem::from_memory(
            "bad",
            issued.key.as_bytes(),
            issued.key.as_bytes(),
            ca.cert_pem().as_bytes(),
        );
        assert!(
            key_for_cert
                .unwrap_err()
                .to_string()
                .contains("certificate")
        );
        let other = ca.issue("y", &[], YEAR).unwrap();
        let mismatched = Pem::from_memory(
            "bad",
            issued.cert.as_bytes(),
            other.key.as_bytes(),
            ca.cert_pem().as_bytes(),
        )
        .unwrap();
        let refused = crate::server_config(&mismatched, crate::ClientAuth::Required);
        assert!(refused.is_err(), "a key of another certificate is refused");
    }

    #[test]
    fn an_expired_certificate_is_refused_on_reading() {
        let ca = Authority::generate("test CA", YEAR).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(7200);
        params.not_after = now - Duration::from_secs(3600);
        let cert = params.signed_by(&key, &ca.issuer).unwrap().pem();
        let err = Pem::from_memory(
            "old",
            cert.as_bytes(),
            key.serialize_pem().as_bytes(),
            ca.cert_pem().as_bytes(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }
}
