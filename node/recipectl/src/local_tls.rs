//! Throwaway certificates for a local cluster (`recipectl local up --tls`):
//! a CA, one member certificate all nodes share, and an administrator's
//! client certificate, under `<data-dir>/tls/`. Made once and reused on
//! restarts, so restarted nodes and earlier exports keep working.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use recipestore_tls::Authority;
use recipestore_tls::Pem;
use recipestore_tls::PemFiles;
use tonic::transport::ClientTlsConfig;

/// How long the throwaway certificates last.
const VALID_FOR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A local cluster's certificates.
pub struct LocalTls {
    dir: PathBuf,
    admin: ClientTlsConfig,
}

impl LocalTls {
    /// The certificates under `<data_root>/tls/`, made now if absent. The
    /// member certificate names `hosts` (the IPs nodes are dialled at) and
    /// `localhost`.
    pub fn create(data_root: &Path, hosts: &[String]) -> anyhow::Result<Self> {
        let dir = data_root.join("tls");
        if !dir.join("client.key").exists() {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let ca = Authority::generate("RecipeStore local CA", VALID_FOR)?;
            let mut names = hosts.to_vec();
            names.push("localhost".into());
            let node = ca.issue(recipestore_tls::MEMBER_NAME, &names, VALID_FOR)?;
            let client = ca.issue(recipestore_tls::ADMIN_NAME, &[], VALID_FOR)?;
            write(&dir.join("ca.crt"), ca.cert_pem(), false)?;
            write(&dir.join("ca.key"), ca.key_pem(), true)?;
            write(&dir.join("node.crt"), &node.cert, false)?;
            write(&dir.join("node.key"), &node.key, true)?;
            write(&dir.join("client.crt"), &client.cert, false)?;
            // Written last: its presence says the set is complete.
            write(&dir.join("client.key"), &client.key, true)?;
        }
        let admin = Pem::read(&files(&dir, "client"))?.client_config();
        Ok(Self { dir, admin })
    }

    /// The flags that give a node its certificate.
    pub fn node_args(&self) -> Vec<String> {
        let path = |name: &str| self.dir.join(name).display().to_string();
        vec![
            "--tls-cert".into(),
            path("node.crt"),
            "--tls-key".into(),
            path("node.key"),
            "--tls-ca".into(),
            path("ca.crt"),
        ]
    }

    /// The administrator's client config.
    pub fn admin(&self) -> &ClientTlsConfig {
        &self.admin
    }

    /// A member's client config: what nodes present to each other, for
    /// tests that call Raft or forwarding as a member would.
    pub fn member(&self) -> anyhow::Result<ClientTlsConfig> {
        Ok(Pem::read(&files(&self.dir, "node"))?.client_config())
    }

    /// Where the CA and the administrator's certificate and key are.
    pub fn client_files(&self) -> PemFiles {
        files(&self.dir, "client")
    }
}

/// The files of the certificate `name` (`node`, `client`) under `dir`,
/// with the CA's.
fn files(dir: &Path, name: &str) -> PemFiles {
    PemFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.crt"),
    }
}

fn write(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if secret { 0o600 } else { 0o644 };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}
