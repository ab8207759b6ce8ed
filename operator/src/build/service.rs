//! The two Services: a headless one that gives each pod a stable DNS name
//! (and carries Raft traffic), and a client one that spreads client calls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::topology::{
    CLIENT_PORT, CLIENT_PORT_NAME, HTTP_PORT, HTTP_PORT_NAME, PEER_PORT, PEER_PORT_NAME,
    SERVICE_ROLE_LABEL, Topology,
};

/// Headless peer Service. Not-ready addresses are published because a node
/// must be reachable by its peers (and by the operator) before it can become
/// ready: it joins the cluster through this name.
pub fn build_peer(topology: &Topology, owner: &OwnerReference) -> Service {
    let mut metadata = object_meta(topology, topology.peer_service(), owner);
    with_role(&mut metadata.labels, "peers");
    Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(topology.selector_labels()),
            ports: Some(vec![
                port(CLIENT_PORT_NAME, CLIENT_PORT),
                port(PEER_PORT_NAME, PEER_PORT),
                port(HTTP_PORT_NAME, HTTP_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Client Service: ready pods only. Any node accepts any call (followers
/// forward writes, and in a sharded store a node passes a call on to the
/// shard that owns its recipe), so plain load balancing is right. A store
/// of one shard selects its pods; a sharded store the pods of the shards
/// that serve slots, which the operator marks ([`crate::topology::SERVING_LABEL`]).
pub fn build_client(topology: &Topology, owner: &OwnerReference, sharded: bool) -> Service {
    let mut metadata = object_meta(topology, topology.client_service(), owner);
    with_role(&mut metadata.labels, "client");
    let selector = if sharded {
        topology.serving_selector()
    } else {
        topology.selector_labels()
    };
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector),
            ports: Some(vec![
                port(CLIENT_PORT_NAME, CLIENT_PORT),
                port(HTTP_PORT_NAME, HTTP_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn with_role(labels: &mut Option<BTreeMap<String, String>>, role: &str) {
    labels
        .get_or_insert_default()
        .insert(SERVICE_ROLE_LABEL.to_owned(), role.to_owned());
}

fn port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}
