//! A node's TLS: the certificates it serves and dials peers with, read
//! again when their files change, and who may call what on the peer port.

use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use recipestore_tls::ClientAuth;
use recipestore_tls::Pem;
use recipestore_tls::PemFiles;
use recipestore_tls::TlsError;
use tokio::sync::watch;
use tonic::Request;
use tonic::Status;
use tonic::transport::ClientTlsConfig;

use crate::config::TlsConfig;
use crate::metrics;

/// How often the certificate files are read to see whether they changed.
/// Kubernetes updates a mounted Secret within about a minute of its change.
const RELOAD_CHECK: Duration = Duration::from_secs(5);
/// How long after a failed reading the files are read once more.
const REREAD_AFTER: Duration = Duration::from_millis(200);

/// The configs built from one reading of the files.
pub struct Loaded {
    pem: Pem,
    /// Bumped on every reload, so cached peer channels know they are stale.
    pub generation: u64,
    pub peer: Arc<recipestore_tls::ServerConfig>,
    pub client: Arc<recipestore_tls::ServerConfig>,
    pub towards_peers: ClientTlsConfig,
}

/// A node's TLS settings and the configs now in force.
pub struct NodeTls {
    files: PemFiles,
    client_auth: ClientAuth,
    current: RwLock<Arc<Loaded>>,
}

impl NodeTls {
    /// Reads the files named by `config`; `None` when TLS is off.
    pub fn load(config: &TlsConfig) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(files) = config.files() else {
            return Ok(None);
        };
        let client_auth = if config.client_cert_auth {
            ClientAuth::Required
        } else {
            ClientAuth::Optional
        };
        let loaded = build(Pem::read(&files)?, client_auth, 0)?;
        Ok(Some(Arc::new(Self {
            files,
            client_auth,
            current: RwLock::new(Arc::new(loaded)),
        })))
    }

    /// The configs in force now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files every few seconds and, when they changed, serves
    /// and dials with the new certificates from then on. Files that do not
    /// load (half-written, mismatched, expired) are refused and the
    /// previous ones kept.
    pub async fn reload_when_changed(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(RELOAD_CHECK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_refusal = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.changed() => return,
            }
            let current = self.current();
            let mut read = Pem::read(&self.files);
            if read.is_err() {
                // Kubernetes swaps a mounted Secret's files all at once, but
                // three reads may straddle the swap: read them again before
                // calling them refused.
                tokio::time::sleep(REREAD_AFTER).await;
                read = Pem::read(&self.files);
            }
            if read.as_ref().is_ok_and(|pem| *pem == current.pem) {
                continue;
            }
            match read.and_then(|pem| build(pem, self.client_auth, current.generation + 1)) {
                Ok(loaded) => {
                    tracing::info!(
                        cert = %self.files.cert.display(),
                        "certificate files changed: new connections use them"
                    );
                    metrics::observe_tls_reload(true);
                    last_refusal = None;
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                }
                Err(e) => {
                    // Said once per distinct problem, not every few seconds.
                    let said = e.to_string();
                    if last_refusal.as_ref() != Some(&said) {
                        tracing::warn!(error = %said, "changed certificate files refused; keeping the current ones");
                        metrics::observe_tls_reload(false);
                        last_refusal = Some(said);
                    }
                }
            }
        }
    }
}

fn build(pem: Pem, client_auth: ClientAuth, generation: u64) -> Result<Loaded, TlsError> {
    if let Some(not_after) = pem.not_after() {
        metrics::observe_certificate(not_after.unix_timestamp());
    }
    Ok(Loaded {
        peer: recipestore_tls::server_config(&pem, ClientAuth::Required)?,
        client: recipestore_tls::server_config(&pem, client_auth)?,
        towards_peers: pem.client_config(),
        generation,
        pem,
    })
}

/// Who may call a service on the peer port.
#[derive(Debug, Clone, Copy)]
pub enum Callers {
    /// Raft and forwarding: members only.
    Members,
    /// The admin API: members and administrators.
    MembersAndAdmins,
}

impl Callers {
    fn names(self) -> &'static [&'static str] {
        match self {
            Callers::Members => &[recipestore_tls::MEMBER_NAME],
            Callers::MembersAndAdmins => {
                &[recipestore_tls::MEMBER_NAME, recipestore_tls::ADMIN_NAME]
            }
        }
    }
}

/// An interceptor admitting only `callers`, by the common name of the
/// certificate the connection was made with. Without TLS it admits all
/// (the peer port is then as open as the network around it).
pub fn admit(
    tls: bool,
    callers: Callers,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |request| {
        if !tls {
            return Ok(request);
        }
        let names = callers.names();
        let certs = request.peer_certs();
        match certs
            .as_deref()
            .and_then(|c| recipestore_tls::common_name(c))
        {
            Some(name) if names.contains(&name.as_str()) => Ok(request),
            Some(name) => Err(Status::permission_denied(format!(
                "a certificate for {name:?} may not call this; it takes {}",
                names.join(" or ")
            ))),
            None => Err(Status::unauthenticated(format!(
                "a certificate with common name {} is required",
                names.join(" or ")
            ))),
        }
    }
}
