//! RecipeStore operator: reconciles `RecipeStore` resources into a StatefulSet
//! of Raft nodes and drives their membership one safe step at a time.
//!
//! - [`crd`]: the `RecipeStore` resource.
//! - [`controller`]: the reconcile pipeline (dereference → validate → build →
//!   apply → update_status).
//! - [`build`]: pure builders of the owned objects; [`topology`]: their
//!   names, labels, ports and addresses.
//! - [`status`]: status and conditions computed from observed state.
//! - [`membership`], [`executor`], [`admin`]: membership planning and its
//!   execution through the nodes' admin API, free of Kubernetes types;
//!   [`placement`]: which shard serves which hash slots, planned alike.
//! - [`metrics`], [`telemetry`], [`leader`], [`http`]: the operator process.

pub mod admin;
pub mod build;
pub mod controller;
pub mod crd;
pub mod executor;
pub mod http;
pub mod integrations;
pub mod leader;
pub mod membership;
pub mod metrics;
pub mod placement;
pub mod preflight;
pub mod rollout;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod topology;

pub use crd::{RecipeStore, RecipeStoreSpec, RecipeStoreStatus};

/// The one field manager for every server-side apply of the operator.
pub const FIELD_MANAGER: &str = "recipestore-operator";

/// Everything that can make a reconcile fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed; `action` says which ("apply StatefulSet").
    #[error("failed to {action}")]
    Kube {
        action: &'static str,
        #[source]
        source: kube::Error,
    },

    /// The spec passed the schema but cannot be run.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// The object lacks a field the API server always sets.
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    /// The store's certificates could not be issued.
    #[error("failed to issue the store's certificates")]
    Certificates(#[source] recipestore_tls::TlsError),

    /// Recording a shard's placement failed at its node's admin API.
    #[error("failed to place shard {shard}")]
    Placement {
        shard: u16,
        #[source]
        source: admin::AdminError,
    },

    /// A step moving slots between shards failed.
    #[error("failed to move slots toward {target} shards")]
    Reshard {
        target: u16,
        #[source]
        source: recipestore_client::reshard::ReshardError,
    },

    /// A membership step failed at the node's admin API.
    #[error("failed to perform membership step {step}")]
    Membership {
        step: &'static str,
        #[source]
        source: admin::AdminError,
    },
}

impl Error {
    /// Short, bounded label for the `errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Certificates(_) => "certificates",
            Error::Membership { .. } => "membership",
            Error::Placement { .. } => "placement",
            Error::Reshard { .. } => "reshard",
        }
    }

    /// Wraps a client error with the action that failed, for `map_err`.
    pub(crate) fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { action, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
