//! PodDisruptionBudget: voluntary disruptions (drains, upgrades) take at most
//! one node at a time, so a quorum of 3 or more always survives them.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::topology::Topology;

pub fn build(topology: &Topology, owner: &OwnerReference) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: object_meta(topology, topology.statefulset(), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(topology.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
