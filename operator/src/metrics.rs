//! Prometheus metrics of the operator, `recipestore_operator_*`, updated
//! through the small functions below rather than scattered registry calls.

use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use recipestore_client::reshard;

use crate::Error;
use crate::membership::Step;

#[derive(Clone)]
pub struct Metrics {
    reconciles: IntCounter,
    errors: IntCounterVec,
    duration: Histogram,
    membership_changes: IntCounterVec,
    membership_refusals: IntCounterVec,
    leader: IntGauge,
    backup_last_success: IntGaugeVec,
    slots_to_move: IntGaugeVec,
    slots_moved: IntCounterVec,
    recipes_copied: IntCounterVec,
    bytes_copied: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            reconciles: IntCounter::new(
                "recipestore_operator_reconciles_total",
                "Reconciles started",
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "recipestore_operator_reconcile_errors_total",
                    "Failed reconciles by error",
                ),
                &["error"],
            )?,
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "recipestore_operator_reconcile_duration_seconds",
                    "Duration of reconciles",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
            membership_changes: IntCounterVec::new(
                Opts::new(
                    "recipestore_operator_membership_changes_total",
                    "Membership steps performed by step",
                ),
                &["step"],
            )?,
            membership_refusals: IntCounterVec::new(
                Opts::new(
                    "recipestore_operator_membership_refusals_total",
                    "Membership steps refused by reason",
                ),
                &["reason"],
            )?,
            leader: IntGauge::new(
                "recipestore_operator_leader",
                "1 while this replica holds the leader Lease",
            )?,
            backup_last_success: IntGaugeVec::new(
                Opts::new(
                    "recipestore_operator_backup_last_success_timestamp_seconds",
                    "When the last scheduled backup of a store succeeded (Unix time); \
                     until one has, when its backups were turned on",
                ),
                &["store_namespace", "store"],
            )?,
            slots_to_move: IntGaugeVec::new(
                Opts::new(
                    "recipestore_operator_slots_to_move",
                    "Hash slots of a sharded store whose shard is not the one spec.shards \
                     gives them (status.placement.slotsToMove)",
                ),
                &["store_namespace", "store"],
            )?,
            slots_moved: IntCounterVec::new(
                Opts::new(
                    "recipestore_operator_slots_moved_total",
                    "Hash slots moved between a store's shards",
                ),
                &["store_namespace", "store"],
            )?,
            recipes_copied: IntCounterVec::new(
                Opts::new(
                    "recipestore_operator_slot_move_recipes_copied_total",
                    "Recipes copied between a store's shards while slots moved",
                ),
                &["store_namespace", "store"],
            )?,
            bytes_copied: IntCounterVec::new(
                Opts::new(
                    "recipestore_operator_slot_move_bytes_copied_total",
                    "Bytes of recipes copied between a store's shards while slots moved",
                ),
                &["store_namespace", "store"],
            )?,
        };
        registry.register(Box::new(metrics.reconciles.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.membership_changes.clone()))?;
        registry.register(Box::new(metrics.membership_refusals.clone()))?;
        registry.register(Box::new(metrics.leader.clone()))?;
        registry.register(Box::new(metrics.backup_last_success.clone()))?;
        registry.register(Box::new(metrics.slots_to_move.clone()))?;
        registry.register(Box::new(metrics.slots_moved.clone()))?;
        registry.register(Box::new(metrics.recipes_copied.clone()))?;
        registry.register(Box::new(metrics.bytes_copied.clone()))?;
        Ok(metrics)
    }

    /// Counts a reconcile and measures it until the guard drops.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn reconcile_failed(&self, error: &Error) {
        self.errors.with_label_values(&[error.metric_label()]).inc();
    }

    /// Counts a performed membership step or a refusal.
    pub fn membership_step(&self, step: &Step) {
        match step {
            Step::Refuse(_) => self
                .membership_refusals
                .with_label_values(&[step.reason()])
                .inc(),
            s if s.is_change() => self
                .membership_changes
                .with_label_values(&[s.reason()])
                .inc(),
            _ => {}
        }
    }

    /// Records when a store's last backup succeeded; `None` forgets the
    /// store (its backups were turned off).
    pub fn set_backup_success(&self, namespace: &str, name: &str, unix_seconds: Option<i64>) {
        match unix_seconds {
            Some(at) => self
                .backup_last_success
                .with_label_values(&[namespace, name])
                .set(at),
            None => {
                let _ = self
                    .backup_last_success
                    .remove_label_values(&[namespace, name]);
            }
        }
    }

    /// Counts what one step of moving a store's slots moved and copied.
    pub fn slots_moved(&self, namespace: &str, name: &str, step: &reshard::Step) {
        let labels = [namespace, name];
        if let Some(batch) = step.batch.as_ref().filter(|_| !step.rolled_back) {
            self.slots_moved
                .with_label_values(&labels)
                .inc_by(batch.slots.len() as u64);
        }
        self.recipes_copied
            .with_label_values(&labels)
            .inc_by(step.recipes_copied);
        self.bytes_copied
            .with_label_values(&labels)
            .inc_by(step.bytes_copied);
    }

    /// Records how many slots of a sharded store must move; `None` (a
    /// store of one shard) exports nothing.
    pub fn set_slots_to_move(&self, namespace: &str, name: &str, slots: Option<u32>) {
        match slots {
            Some(slots) => self
                .slots_to_move
                .with_label_values(&[namespace, name])
                .set(i64::from(slots)),
            None => {
                let _ = self.slots_to_move.remove_label_values(&[namespace, name]);
            }
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}

/// Observes the reconcile duration when dropped, on every return path.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{Handoff, Refusal, WaitReason};

    fn value(registry: &Registry, name: &str, label: Option<&str>) -> f64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| label.is_none_or(|l| m.get_label().iter().any(|p| p.value() == l)))
            .map(|m| m.get_counter().get_value())
            .sum()
    }

    #[test]
    fn errors_are_counted_by_metric_label() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        metrics.reconcile_failed(&Error::InvalidSpec("x".into()));
        metrics.reconcile_failed(&Error::MissingObjectKey("metadata.uid"));
        assert_eq!(
            value(
                &registry,
                "recipestore_operator_reconcile_errors_total",
                Some("invalid_spec")
            ),
            1.0
        );
        assert_eq!(
            value(
                &registry,
                "recipestore_operator_reconcile_errors_total",
                None
            ),
            2.0
        );
    }

    #[test]
    fn steps_count_changes_and_refusals_but_not_waits() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        metrics.membership_step(&Step::TransferLeadership {
            from: 3,
            to: 0,
            before: Handoff::Removal,
        });
        metrics.membership_step(&Step::Wait(WaitReason::NoLeader));
        metrics.membership_step(&Step::Refuse(Refusal::ClusterLost {
            cluster_id: "c".into(),
        }));
        assert_eq!(
            value(
                &registry,
                "recipestore_operator_membership_changes_total",
                None
            ),
            1.0
        );
        assert_eq!(
            value(
                &registry,
                "recipestore_operator_membership_refusals_total",
                Some("ClusterLost")
            ),
            1.0
        );
    }

    #[test]
    fn slots_to_move_are_exported_for_sharded_stores_only() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        let gauge = |registry: &Registry| -> Vec<i64> {
            registry
                .gather()
                .iter()
                .filter(|f| f.name() == "recipestore_operator_slots_to_move")
                .flat_map(|f| f.get_metric().iter())
                .map(|m| m.get_gauge().get_value() as i64)
                .collect()
        };
        metrics.set_slots_to_move("kitchen", "recipes", Some(512));
        assert_eq!(gauge(&registry), [512]);
        metrics.set_slots_to_move("kitchen", "recipes", None);
        assert!(gauge(&registry).is_empty());
    }

    #[test]
    fn reconciles_are_counted_and_timed() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        drop(metrics.reconcile_started());
        assert_eq!(
            value(&registry, "recipestore_operator_reconciles_total", None),
            1.0
        );
        let families = registry.gather();
        let histogram = families
            .iter()
            .find(|f| f.name() == "recipestore_operator_reconcile_duration_seconds")
            .unwrap();
        assert_eq!(
            histogram.get_metric()[0].get_histogram().get_sample_count(),
            1
        );
    }
}
