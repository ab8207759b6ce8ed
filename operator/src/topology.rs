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

/// Label naming the shard of a shard's objects and pods (shards 1 and up;
/// shard 0's pods keep the labels of an unsharded store's).
pub const SHARD_LABEL: &str = "recipestore.dev/shard";

/// Label the operator puts on the pods of the shards that serve hash
/// slots, which a sharded store's client Service selects: a shard waiting
/// for slots would otherwise take writes for slots it does not own.
pub const SERVING_LABEL: &str = "recipestore.dev/serving";

/// `app.kubernetes.io/name` of shard 0's pods: that of every store before
/// shards, which the selectors of existing StatefulSets name.
const APP_NAME: &str = "recipestore";
/// `app.kubernetes.io/name` of the pods of shards 1 and up. It differs from
/// shard 0's so that shard 0's selector (`name` and `instance` only, and
/// immutable) never selects them, and a selector naming it also names the
/// instance and the shard, so no two StatefulSets' selectors overlap.
const SHARD_APP_NAME: &str = "recipestore-shard";

/// Where one shard of a RecipeStore's objects live and what they are
/// called. Shard 0's objects have the names (and pods the labels) of an
/// unsharded store's, so a store from before shards is shard 0 unchanged;
/// shard `k` of store `cookbook` is StatefulSet `cookbook-s<k>`, pods
/// `cookbook-s<k>-0`, ....
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub name: String,
    pub namespace: String,
    pub shard: u16,
    /// The shard's StatefulSet: also its PDB's name and its pods' prefix.
    statefulset: String,
}

impl Topology {
    /// Shard 0's topology, which also names what the shards share.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            statefulset: name.clone(),
            name,
            namespace: namespace.into(),
            shard: 0,
        }
    }

    /// Shard `shard` of the same store.
    pub fn shard(&self, shard: u16) -> Self {
        Self {
            statefulset: match shard {
                0 => self.name.clone(),
                k => format!("{}-s{k}", self.name),
            },
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            shard,
        }
    }

    /// The shard's StatefulSet and PDB. Shard 0's share the resource's
    /// name with the client Service and the ServiceMonitor.
    pub fn statefulset(&self) -> &str {
        &self.statefulset
    }

    pub fn client_service(&self) -> &str {
        &self.name
    }

    /// The shard's headless Service, giving every pod a stable DNS name.
    pub fn peer_service(&self) -> String {
        format!("{}-peers", self.statefulset)
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

    /// The names the members' certificate holds: the peer address of every
    /// pod of each of `shards` shards, the client Service's names, and
    /// loopback for port-forwards.
    pub fn tls_hosts(&self, shards: u16) -> Vec<String> {
        let (client, ns) = (self.client_service(), &self.namespace);
        let mut hosts: Vec<String> = (0..shards.max(1))
            .flat_map(|k| {
                let peers = self.shard(k).peer_service();
                [
                    format!("*.{peers}.{ns}.svc"),
                    format!("*.{peers}.{ns}.svc.cluster.local"),
                ]
            })
            .collect();
        hosts.extend([
            client.to_owned(),
            format!("{client}.{ns}"),
            format!("{client}.{ns}.svc"),
            format!("{client}.{ns}.svc.cluster.local"),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ]);
        hosts
    }

    pub fn backup_cronjob(&self) -> String {
        format!("{}-backup", self.name)
    }

    pub fn config_map(&self) -> String {
        format!("{}-config", self.name)
    }

    pub fn pod(&self, ordinal: NodeId) -> String {
        format!("{}-{ordinal}", self.statefulset)
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

    /// Labels that select this shard's pods, and no other shard's or
    /// store's. Never change them: a StatefulSet's selector is immutable.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        let app = if self.shard == 0 {
            APP_NAME
        } else {
            SHARD_APP_NAME
        };
        let mut labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), app.to_owned()),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
        ]);
        if self.shard > 0 {
            labels.insert(SHARD_LABEL.to_owned(), self.shard.to_string());
        }
        labels
    }

    /// What a sharded store's client Service selects: the pods of every
    /// shard of this store that the operator marked as serving slots.
    pub fn serving_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
            (SERVING_LABEL.to_owned(), "true".to_owned()),
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

    /// Labels of the shard's pods.
    pub fn pod_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert("app.kubernetes.io/component".to_owned(), "node".to_owned());
        labels.insert(MANAGED_BY_LABEL.to_owned(), crate::FIELD_MANAGER.to_owned());
        labels
    }

    /// Labels of every owned object: shard 0's pods' labels, so that the
    /// ServiceMonitor's selector of Services finds every shard's, and the
    /// shard's number on a shard's own objects.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.shard(0).pod_labels();
        if self.shard > 0 {
            labels.insert(SHARD_LABEL.to_owned(), self.shard.to_string());
        }
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
    fn shards_have_their_own_names_and_shard_0_keeps_an_unsharded_store_s() {
        let t = Topology::new("rs", "ns");
        assert_eq!(t.shard(0), t);
        let s2 = t.shard(2);
        assert_eq!(s2.statefulset(), "rs-s2");
        assert_eq!(s2.peer_service(), "rs-s2-peers");
        assert_eq!(s2.pod(1), "rs-s2-1");
        assert_eq!(s2.member(1).client_addr, "rs-s2-1.rs-s2-peers.ns.svc:7070");
        assert_eq!(s2.client_service(), "rs");
        assert_eq!(s2.config_map(), "rs-config");
        assert_eq!(s2.ordinal_of("rs-s2-1"), Some(1));
        assert_eq!(
            t.ordinal_of("rs-s2-1"),
            None,
            "shard 0 never claims shard 2's pods"
        );
        assert_eq!(s2.ordinal_of("rs-1"), None);
    }

    /// Whether `selector` selects a pod labelled `labels`.
    fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// A StatefulSet (or PDB) selecting another's pods fights it over them:
    /// no shard's selector may select a pod of another shard, of this
    /// store or of another one, whatever the stores are called ("rs-s1"
    /// is a store name as good as "rs").
    #[test]
    fn no_shard_s_selector_selects_another_shard_s_pods() {
        let stores = [Topology::new("rs", "ns"), Topology::new("rs-s1", "ns")];
        let shards: Vec<Topology> = stores
            .iter()
            .flat_map(|t| (0..4).map(|k| t.shard(k)))
            .collect();
        for a in &shards {
            for b in &shards {
                let own = a == b;
                assert_eq!(
                    selects(&a.selector_labels(), &b.pod_labels()),
                    own,
                    "{} shard {} selecting the pods of {} shard {}",
                    a.name,
                    a.shard,
                    b.name,
                    b.shard
                );
            }
        }
    }

    /// The labels that distinguish shard 0's pods are those of existing
    /// stores, whose StatefulSets cannot change their selector.
    #[test]
    fn shard_0_selects_as_stores_from_before_shards() {
        let t = Topology::new("rs", "ns");
        assert_eq!(
            t.selector_labels(),
            BTreeMap::from([
                ("app.kubernetes.io/instance".to_owned(), "rs".to_owned()),
                (
                    "app.kubernetes.io/name".to_owned(),
                    "recipestore".to_owned()
                ),
            ])
        );
        assert_eq!(t.labels(), t.pod_labels());
    }

    #[test]
    fn the_serving_selector_selects_marked_pods_of_every_shard_of_the_store_only() {
        let t = Topology::new("rs", "ns");
        let serving = |shard: &Topology| {
            let mut labels = shard.pod_labels();
            labels.insert(SERVING_LABEL.to_owned(), "true".to_owned());
            labels
        };
        for k in 0..3 {
            assert!(selects(&t.serving_selector(), &serving(&t.shard(k))));
            assert!(!selects(&t.serving_selector(), &t.shard(k).pod_labels()));
        }
        let other = Topology::new("rs-s1", "ns");
        assert!(!selects(&t.serving_selector(), &serving(&other)));
    }

    #[test]
    fn the_certificate_names_every_shard_s_pods() {
        let hosts = Topology::new("rs", "ns").tls_hosts(2);
        assert!(hosts.contains(&"*.rs-peers.ns.svc".to_owned()));
        assert!(hosts.contains(&"*.rs-s1-peers.ns.svc".to_owned()));
        assert!(!hosts.iter().any(|h| h.contains("rs-s2")));
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
