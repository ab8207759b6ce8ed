//! Names, labels, ports and DNS addresses of everything a RecipeStore owns.
//! One source of truth shared by the builders and the membership observer.

use std::collections::BTreeMap;

use crate::membership::{Member, NodeId};

/// Port of the client gRPC API.
pub const CLIENT_PORT: u16 = 7070;
/// Port of the peer gRPC server (Raft, admin).
pub const PEER_PORT: u16 = 7071;
/// Port of the HTTP server (`/metrics`, `/healthz`, `/readyz`).
pub const HTTP_PORT: u16 = 9090;

pub const CLIENT_PORT_NAME: &str = "client";
pub const PEER_PORT_NAME: &str = "peer";
pub const HTTP_PORT_NAME: &str = "http";

/// Label telling the client Service apart from the peer Service, so that a
/// ServiceMonitor scrapes each pod once.
pub const SERVICE_ROLE_LABEL: &str = "recipestore.dev/service";

/// Label naming the operator on every object it owns.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Where one RecipeStore's objects live and what they are called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub name: String,
    pub namespace: String,
}

impl Topology {
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    /// The StatefulSet, the client Service, the PDB and the ServiceMonitor share the resource's name.
    pub fn statefulset(&self) -> &str {
        &self.name
    }

    pub fn client_service(&self) -> &str {
        &self.name
    }

    /// Headless Service giving every pod a stable DNS name.
    pub fn peer_service(&self) -> String {
        format!("{}-peers", self.name)
    }

    /// The CA of a store whose certificates the operator issues.
    pub fn tls_ca_secret(&self) -> String {
        format!("{}-tls-ca", self.name)
    }

    /// The members' certificate the operator issues.
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.name)
    }

    /// The administrators' certificate the operator issues.
    pub fn tls_admin_secret(&self) -> String {
        format!("{}-tls-admin", self.name)
    }

    /// The names the members' certificate holds: every pod's peer address,
    /// the client Service's names, and loopback for port-forwards.
    pub fn tls_hosts(&self) -> Vec<String> {
        let (peers, client, ns) = (self.peer_service(), self.client_service(), &self.namespace);
        vec![
            format!("*.{peers}.{ns}.svc"),
            format!("*.{peers}.{ns}.svc.cluster.local"),
            client.to_owned(),
            format!("{client}.{ns}"),
            format!("{client}.{ns}.svc"),
            format!("{client}.{ns}.svc.cluster.local"),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ]
    }

    pub fn backup_cronjob(&self) -> String {
        format!("{}-backup", self.name)
    }

    pub fn config_map(&self) -> String {
        format!("{}-config", self.name)
    }

    pub fn pod(&self, ordinal: NodeId) -> String {
        format!("{}-{ordinal}", self.name)
    }

    /// Stable DNS name of a pod through the headless Service.
    pub fn pod_host(&self, ordinal: NodeId) -> String {
        format!(
            "{}.{}.{}.svc",
            self.pod(ordinal),
            self.peer_service(),
            self.namespace
        )
    }

    /// The member a pod runs: node id = ordinal, addresses = stable DNS name.
    pub fn member(&self, ordinal: NodeId) -> Member {
        let host = self.pod_host(ordinal);
        Member {
            id: ordinal,
            peer_addr: format!("{host}:{PEER_PORT}"),
            client_addr: format!("{host}:{CLIENT_PORT}"),
        }
    }

    /// Ordinal of a pod of this StatefulSet, from its name.
    pub fn ordinal_of(&self, pod_name: &str) -> Option<NodeId> {
        pod_name
            .strip_prefix(self.statefulset())?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// Labels that select this RecipeStore's pods. Never change them: a
    /// StatefulSet's selector is immutable.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_owned(),
                "recipestore".to_owned(),
            ),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
        ])
    }

    /// Label selector in the `key=value,...` form of `status.selector`.
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Labels of every owned object.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert("app.kubernetes.io/component".to_owned(), "node".to_owned());
        labels.insert(MANAGED_BY_LABEL.to_owned(), crate::FIELD_MANAGER.to_owned());
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_addresses_are_stable_pod_dns_names() {
        let t = Topology::new("rs", "ns");
        let m = t.member(2);
        assert_eq!(m.id, 2);
        assert_eq!(m.peer_addr, "rs-2.rs-peers.ns.svc:7071");
        assert_eq!(m.client_addr, "rs-2.rs-peers.ns.svc:7070");
    }

    #[test]
    fn ordinals_parse_only_from_own_pods() {
        let t = Topology::new("rs", "ns");
        assert_eq!(t.ordinal_of("rs-0"), Some(0));
        assert_eq!(t.ordinal_of("rs-12"), Some(12));
        assert_eq!(t.ordinal_of("rs-peers-1"), None);
        assert_eq!(t.ordinal_of("other-1"), None);
        assert_eq!(t.ordinal_of("rs"), None);
    }

    #[test]
    fn selector_string_lists_selector_labels() {
        let t = Topology::new("rs", "ns");
        assert_eq!(
            t.selector_string(),
            "app.kubernetes.io/instance=rs,app.kubernetes.io/name=recipestore"
        );
    }
}
