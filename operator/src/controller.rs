//! The reconciler. Each reconcile is one pass of a documented pipeline:
//!
//! 1. **dereference**: read what exists — each shard's StatefulSet and its
//!    pods, whether the ServiceMonitor CRD is installed — and ask every
//!    running node for its admin `Status`.
//! 2. **validate**: refuse specs the schema could not catch (for example a
//!    changed storage size on a CRD installed without CEL rules).
//! 3. **build**: plan each shard's next membership step (pure,
//!    [`membership::plan`]) and the next placement step (pure,
//!    [`placement::plan`]), and build every owned object for them (pure,
//!    [`build::build`]).
//! 4. **apply**: server-side apply the objects under one field manager
//!    (a sharded store's pods labelled by whether their shard serves
//!    slots), then perform each shard's membership step and the placement
//!    step through the admin API.
//! 5. **update_status**: compute the status from the observation and the
//!    plans and apply it to the status subresource.
//!
//! Only dereference, apply and update_status do I/O. Every step is derived
//! from observed state, so a restarted operator simply continues.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::admin::NodeAdmin;
use crate::admin::ShardAddrs;
use crate::build::{self, Resources};
use crate::integrations::Integrations;
use crate::membership::{self, NodeId, Observed, Plan, Policy, Step};
use crate::metrics::Metrics;
use crate::tls::{self, StoreTls};
use crate::topology::{MANAGED_BY_LABEL, SERVING_LABEL, Topology};
use crate::{
    Error, FIELD_MANAGER, RecipeStore, RecipeStoreSpec, Result, executor, placement, status,
};
use recipestore_client::reshard;
use recipestore_protocol::slots::SLOTS;

/// The label the StatefulSet controller puts on each pod: the revision
/// (a `ControllerRevision` name) the pod was created from.
const REVISION_LABEL: &str = "controller-revision-hash";
/// Requeue while a change is under way: membership moves one step per pass.
const REQUEUE_CHANGING: Duration = Duration::from_secs(5);
/// Requeue when steady, to notice node-side changes that Kubernetes does not see.
const REQUEUE_STEADY: Duration = Duration::from_secs(60);
/// While slots move between shards: each pass takes one batch.
const REQUEUE_MOVING: Duration = Duration::from_secs(1);
/// Retry after a failed reconcile.
const REQUEUE_ERROR: Duration = Duration::from_secs(15);
/// An invalid spec only changes when a person edits it.
const REQUEUE_INVALID: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub admin: Arc<dyn NodeAdmin>,
    pub policy: Policy,
    /// Optional APIs found by discovery, outside the reconcile.
    pub integrations: Arc<Integrations>,
}

/// What dereference found.
pub struct World {
    /// Every shard that exists or `spec.shards` asks for, shard 0 first.
    pub shards: Vec<ShardWorld>,
    pub service_monitor: Option<ApiResource>,
    /// Whether and how the store runs TLS, or why its spec cannot.
    pub tls: Result<Option<StoreTls>, String>,
    /// The certificate Secrets found.
    pub tls_secrets: tls::Secrets,
    /// The admin API as this store is called: over TLS when it runs TLS.
    pub admin: Arc<dyn NodeAdmin>,
}

#[instrument(skip(rs, ctx), fields(name = %rs.name_any(), namespace = rs.namespace().unwrap_or_default()))]
pub async fn reconcile(rs: Arc<RecipeStore>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let result = reconcile_pass(&rs, &ctx).await;
    // A refused API call (RBAC, an admission webhook, a field the API server
    // finds invalid) is told on the resource, where `kubectl describe`
    // shows it; refused specs and failed steps have their own Events.
    if let Err(error @ (Error::Kube { .. } | Error::MissingObjectKey(_))) = &result {
        let note = format!("{error}: {}", error_chain(error));
        if let Err(publish_error) = publish(
            &ctx,
            &rs,
            EventType::Warning,
            "ReconcileFailed",
            "Reconcile",
            note,
        )
        .await
        {
            warn!(error = %publish_error, "failed to record the failure as an Event");
        }
    }
    result
}

async fn reconcile_pass(rs: &RecipeStore, ctx: &Context) -> Result<Action> {
    if rs.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children;
        // nothing outside Kubernetes needs cleaning up.
        return Ok(Action::await_change());
    }
    let topology = build::topology(rs)?;

    let world = dereference(rs, &topology, ctx).await?;

    let certificate_api = ctx.integrations.certificate();
    let valid = validate(&rs.spec, world.shard0().statefulset.as_ref())
        .and_then(|()| validate_shards(rs, &world))
        .and_then(|()| build::restore::check(rs))
        .and_then(|()| world.tls.clone())
        .and_then(|store_tls| match &store_tls {
            Some(StoreTls {
                issuer: tls::Issuer::CertManager(_),
                ..
            }) if certificate_api.is_none() => Err(
                "tls.issuerRef names a cert-manager issuer, but this cluster does not serve \
                 cert-manager's Certificate API (cert-manager.io/v1): install cert-manager, \
                 or leave issuerRef out for certificates the operator issues"
                    .to_owned(),
            ),
            _ => Ok(store_tls),
        });
    let store_tls = match valid {
        Ok(store_tls) => store_tls,
        Err(problem) => {
            report_invalid(rs, &topology, ctx, &problem).await?;
            return Err(Error::InvalidSpec(problem));
        }
    };

    let plans: Vec<Plan> = world
        .shards
        .iter()
        .map(|shard| membership::plan(&shard.membership, &ctx.policy))
        .collect();
    let placement_inputs = placement_inputs(rs, &world, &plans);
    let decision = placement::plan(&placement_inputs);
    let serving = placement::current(&placement_inputs);
    let replicas: Vec<u32> = plans.iter().map(|p| p.statefulset_replicas).collect();
    let resources = build::build(
        rs,
        &replicas,
        plans[0].forcing,
        world.service_monitor.as_ref(),
        store_tls.as_ref(),
    )?;

    if let Some(store_tls) = &store_tls {
        issue_certificates(
            rs,
            &topology,
            world.shards.len(),
            ctx,
            store_tls,
            &world.tls_secrets,
            certificate_api.as_ref(),
        )
        .await?;
        // Secrets a person names are theirs to create; say what is wrong
        // with them rather than leave the nodes unreachable in silence.
        if store_tls.issuer == tls::Issuer::Given && tls::admin_config(&world.tls_secrets).is_none()
        {
            let note = format!(
                "the Secret {} (tls.adminSecretName) is missing or lacks a usable tls.crt, \
                 tls.key and ca.crt: the operator cannot call the nodes",
                store_tls.admin_secret
            );
            publish(
                ctx,
                rs,
                EventType::Warning,
                "TLSSecretUnusable",
                "ReadCertificate",
                note,
            )
            .await?;
        }
    }
    let backup = apply(
        rs,
        &topology,
        ctx,
        &world,
        serving.as_ref(),
        &resources,
        world.service_monitor.as_ref(),
    )
    .await?;
    record_backups(rs, &topology, ctx, backup.as_ref());
    for shard in &world.shards {
        reload_settings(rs, ctx, world.admin.as_ref(), shard).await?;
    }
    if let Some(at) = newly_succeeded(rs, backup.as_ref()) {
        let note = format!("a scheduled backup succeeded at {}", at.0);
        publish(
            ctx,
            rs,
            EventType::Normal,
            "BackupSucceeded",
            "Backup",
            note,
        )
        .await?;
    }
    // A failed step still gets its status written: what was observed is
    // true. Each shard's step is its own: one failing holds no other back.
    let mut performed = Ok(());
    for (shard, plan) in world.shards.iter().zip(&plans) {
        let result = perform(rs, &shard.topology, ctx, world.admin.as_ref(), plan).await;
        if performed.is_ok() {
            performed = result;
        }
    }
    let placed = match &decision {
        placement::Decision::Place(placings) => {
            place(rs, ctx, world.admin.as_ref(), placings).await
        }
        // Slots move toward the target map one step per pass, from what
        // the groups record; the condition and an Event tell what is left.
        placement::Decision::Move(pending) => {
            report_pending_move(rs, ctx, pending).await?;
            move_slots(rs, ctx, world.admin.as_ref(), &placement_inputs, pending).await
        }
        placement::Decision::Unsharded
        | placement::Decision::Wait(_)
        | placement::Decision::Steady => Ok(()),
    };

    update_status(
        rs,
        &topology,
        ctx,
        &world,
        &plans,
        &placement_inputs,
        &decision,
        backup.as_ref(),
    )
    .await?;
    performed?;
    placed?;

    let changing = plans
        .iter()
        .any(|plan| !matches!(plan.step, Step::Steady | Step::Refuse(_)))
        || matches!(
            decision,
            placement::Decision::Place(_) | placement::Decision::Wait(_)
        );
    // Nothing moves until the nodes or a person change something; slots
    // moving take their next step at once.
    Ok(if matches!(decision, placement::Decision::Move(_)) {
        Action::requeue(REQUEUE_MOVING)
    } else if changing {
        Action::requeue(REQUEUE_CHANGING)
    } else {
        Action::requeue(REQUEUE_STEADY)
    })
}

/// What the placement planner is given: each shard's group as its leader
/// reports it (its placement, and its voters as where the shard is
/// reached; the desired pods' addresses before it has a leader), and
/// whether the status recorded that the store ran unsharded (shard 0
/// serving every slot without a placement).
fn placement_inputs(rs: &RecipeStore, world: &World, plans: &[Plan]) -> placement::Inputs {
    let desired = u64::try_from(rs.spec.replicas).unwrap_or(0);
    let shards = world
        .shards
        .iter()
        .zip(plans)
        .map(|(shard, plan)| {
            let leader = plan.leader.as_ref().filter(|_| plan.cluster_id.is_some());
            let led = leader.and_then(|l| shard.membership.nodes.get(&l.id));
            let client_addrs = match led {
                Some(node) => {
                    let mut voters = node.voters.clone();
                    voters.sort_by_key(|m| m.id);
                    voters.into_iter().map(|m| m.client_addr).collect()
                }
                None => (0..desired)
                    .map(|id| shard.topology.member(id).client_addr)
                    .collect(),
            };
            let peer_addrs = match led {
                Some(node) => {
                    let mut voters = node.voters.clone();
                    voters.sort_by_key(|m| m.id);
                    voters.into_iter().map(|m| m.peer_addr).collect()
                }
                None => Vec::new(),
            };
            placement::Shard {
                shard: shard.topology.shard,
                leader: leader.map(|l| l.peer_addr.clone()),
                placement: led.and_then(|n| n.placement.clone()),
                client_addrs,
                peer_addrs,
            }
        })
        .collect();
    let previous = rs.status.as_ref();
    let ran_unsharded = previous.is_some_and(|s| {
        let recorded = s
            .placement
            .as_ref()
            .is_some_and(|p| p.epoch.is_none() && !p.current.is_empty());
        recorded || (s.cluster_id.is_some() && s.shards.is_empty())
    });
    placement::Inputs {
        target: u16::try_from(rs.spec.shards.clamp(1, i32::from(SLOTS))).unwrap_or(1),
        shards,
        ran_unsharded,
    }
}

/// Records each placement in its shard's group, with an Event each.
async fn place(
    rs: &RecipeStore,
    ctx: &Context,
    admin: &dyn NodeAdmin,
    placings: &[placement::Placing],
) -> Result<()> {
    for placing in placings {
        let shard = placing.shard;
        let owners: Vec<u16> = placing
            .placement
            .owners
            .iter()
            .map(|&o| u16::try_from(o).unwrap_or(u16::MAX))
            .collect();
        let map = placement::SlotMap {
            epoch: Some(placing.placement.epoch),
            owners,
        };
        match admin
            .place(&placing.leader, placing.placement.clone())
            .await
        {
            Ok(epoch) => {
                let note = format!(
                    "shard {shard} placed at epoch {epoch}: it serves slots {}",
                    map.ranges_of(shard)
                );
                info!("{note}");
                publish(ctx, rs, EventType::Normal, "Placed", "Place", note).await?;
            }
            Err(source) => {
                let error = Error::Placement { shard, source };
                let note = format!("{error}: {}", error_chain(&error));
                publish(ctx, rs, EventType::Warning, "PlaceFailed", "Place", note).await?;
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Takes one step of moving slots toward `pending.target` shards, once
/// every shard's group has a leader, with an Event saying what moved.
async fn move_slots(
    rs: &RecipeStore,
    ctx: &Context,
    admin: &dyn NodeAdmin,
    inputs: &placement::Inputs,
    pending: &placement::PendingMove,
) -> Result<()> {
    if let Some(waiting) = inputs.shards.iter().find(|s| s.leader.is_none()) {
        info!(
            shard = waiting.shard,
            "slots move once every shard's group has a leader"
        );
        return Ok(());
    }
    let shards = ShardAddrs::of(inputs);
    let target = pending.target;
    // The driver's default pace: its batches and copy rate.
    let pace = reshard::Pace::default();
    let step = match admin.reshard_step(&shards, target, pace).await {
        Ok(step) => step,
        Err(source) => {
            let error = Error::Reshard { target, source };
            let note = format!("{error}: {}", error_chain(&error));
            publish(
                ctx,
                rs,
                EventType::Warning,
                "SlotMoveFailed",
                "MoveSlots",
                note,
            )
            .await?;
            return Err(error);
        }
    };
    ctx.metrics
        .slots_moved(&rs.namespace().unwrap_or_default(), &rs.name_any(), &step);
    let Some(batch) = &step.batch else {
        return Ok(());
    };
    let verb = if step.rolled_back {
        "kept (a move rolled back)"
    } else {
        "moved"
    };
    let note = format!(
        "slots {} {verb} from shard {} to shard {}: {} recipes ({} bytes) copied; {} slots left to move",
        placement::ranges(&batch.slots),
        batch.from,
        batch.to,
        step.recipes_copied,
        step.bytes_copied,
        step.remaining
    );
    info!("{note}");
    publish(ctx, rs, EventType::Normal, "SlotsMoved", "MoveSlots", note).await
}

/// Tells of slots that must move, once per change of what must move:
/// the condition says it on every pass, the Event when it first appears.
async fn report_pending_move(
    rs: &RecipeStore,
    ctx: &Context,
    pending: &placement::PendingMove,
) -> Result<()> {
    let note = pending.to_string();
    let told = rs.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == status::SLOTS_PENDING && c.status == "True" && c.message == note)
    });
    if told {
        return Ok(());
    }
    warn!("{note}");
    publish(
        ctx,
        rs,
        EventType::Warning,
        status::SLOT_MOVE_PENDING,
        "Placement",
        note,
    )
    .await
}

/// Logs, counts and retries a failed reconcile.
pub fn error_policy(rs: Arc<RecipeStore>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(name = %rs.name_any(), error = %error, source = ?std::error::Error::source(error), "reconcile failed");
    ctx.metrics.reconcile_failed(error);
    match error {
        Error::InvalidSpec(_) => Action::requeue(REQUEUE_INVALID),
        _ => Action::requeue(REQUEUE_ERROR),
    }
}

/// Step 1: read each shard's StatefulSet, its pods and the nodes' own view.
async fn dereference(rs: &RecipeStore, topology: &Topology, ctx: &Context) -> Result<World> {
    let service_monitor = ctx.integrations.service_monitor();
    let sharded = shard_count(rs) > 1;
    let mut shards = Vec::new();
    for k in 0..shard_count(rs) {
        shards.push(dereference_shard(rs, topology.shard(k), sharded, ctx).await?);
    }
    // TLS is decided from shard 0's StatefulSet, which every store has.
    let store_tls = tls::decide(&rs.spec.tls, topology, shards[0].statefulset.as_ref());
    let tls_secrets = match &store_tls {
        Ok(Some(store_tls)) => read_tls_secrets(topology, ctx, store_tls).await?,
        _ => tls::Secrets::default(),
    };
    let admin = tls::admin_for(
        &ctx.admin,
        store_tls.as_ref().ok().and_then(Option::as_ref),
        &tls_secrets,
    );
    for shard in &mut shards {
        shard.membership.nodes =
            executor::observe_nodes(admin.as_ref(), &shard.membership.pods).await;
    }
    Ok(World {
        shards,
        service_monitor,
        tls: store_tls,
        tls_secrets,
        admin,
    })
}

/// One shard's StatefulSet and pods; its nodes are asked once the
/// store's TLS is known.
async fn dereference_shard(
    rs: &RecipeStore,
    topology: Topology,
    sharded: bool,
    ctx: &Context,
) -> Result<ShardWorld> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &topology.namespace);
    let statefulset = statefulsets
        .get_opt(topology.statefulset())
        .await
        .map_err(Error::kube("get StatefulSet"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &topology.namespace);
    let pod_list = pods
        .list(&ListParams::default().labels(&topology.selector_string()))
        .await
        .map_err(Error::kube("list pods"))?;
    let mut serving_pods = BTreeMap::new();
    let pods: BTreeMap<_, _> = pod_list
        .items
        .iter()
        .filter_map(|pod| {
            let ordinal = topology.ordinal_of(&pod.name_any())?;
            let deleting = pod.metadata.deletion_timestamp.is_some();
            let running = !deleting
                && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            serving_pods.insert(
                ordinal,
                pod.labels().get(SERVING_LABEL).map(String::as_str) == Some("true"),
            );
            Some((
                ordinal,
                membership::Pod {
                    member: topology.member(ordinal),
                    running,
                    ready: running && ready,
                    deleting,
                    revision: pod.labels().get(REVISION_LABEL).cloned(),
                },
            ))
        })
        .collect();

    let statefulset_replicas = statefulset
        .as_ref()
        .and_then(|s| s.spec.as_ref()?.replicas)
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0);
    let status = rs.status.as_ref();
    let recorded_cluster_id = if topology.shard == 0 {
        status.and_then(|s| s.cluster_id.clone())
    } else {
        status
            .and_then(|s| s.shards.iter().find(|r| r.shard == topology.shard))
            .and_then(|r| r.cluster_id.clone())
    };
    // Recovering a lost quorum names a member by its ordinal, which every
    // shard has: only an unsharded store takes it (validate refuses it on
    // a sharded one).
    let unsharded = !sharded;
    Ok(ShardWorld {
        membership: Observed {
            desired_replicas: u32::try_from(rs.spec.replicas).unwrap_or(0),
            statefulset_replicas,
            pods,
            nodes: BTreeMap::new(),
            recorded_cluster_id,
            force_recovery: rs
                .annotations()
                .get(membership::FORCE_RECOVERY_ANNOTATION)
                .filter(|_| unsharded)
                .cloned(),
            forcing: status
                .and_then(|s| s.forcing_new_cluster)
                .filter(|_| unsharded),
            update_revision: statefulset
                .as_ref()
                .and_then(|s| s.status.as_ref()?.update_revision.clone()),
        },
        statefulset,
        topology,
        serving_pods,
    })
}

/// What dereference found of one shard.
pub struct ShardWorld {
    pub topology: Topology,
    pub statefulset: Option<StatefulSet>,
    pub membership: Observed,
    /// Whether each pod carries the serving label the client Service of a
    /// sharded store selects.
    pub serving_pods: BTreeMap<NodeId, bool>,
}

impl World {
    /// Shard 0, which every store has.
    fn shard0(&self) -> &ShardWorld {
        &self.shards[0]
    }
}

/// How many shards a store has: those `spec.shards` asks for, and those
/// the status lists beyond them (a store shrunk keeps its shards until
/// their slots move away). Out of range, the count is what validation
/// refuses; this only keeps it a shard number.
fn shard_count(rs: &RecipeStore) -> u16 {
    let asked = u16::try_from(rs.spec.shards.clamp(1, i32::from(SLOTS))).unwrap_or(1);
    let listed = rs.status.as_ref().map_or(0, |s| s.shards.len());
    asked.max(u16::try_from(listed).unwrap_or(SLOTS))
}

/// The store's certificate Secrets: the administrator's always, the CA and
/// the members' when the operator issues them (to renew them in time).
async fn read_tls_secrets(
    topology: &Topology,
    ctx: &Context,
    store_tls: &StoreTls,
) -> Result<tls::Secrets> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &topology.namespace);
    let get = |name: String| {
        let api = api.clone();
        async move {
            api.get_opt(&name)
                .await
                .map_err(Error::kube("get TLS Secret"))
        }
    };
    Ok(if store_tls.issuer == tls::Issuer::Operator {
        tls::Secrets {
            ca: get(topology.tls_ca_secret()).await?,
            member: get(store_tls.member_secret.clone()).await?,
            admin: get(store_tls.admin_secret.clone()).await?,
        }
    } else {
        tls::Secrets {
            admin: get(store_tls.admin_secret.clone()).await?,
            ..tls::Secrets::default()
        }
    })
}

/// Applies the certificates an issuing store lacks or must renew, with an
/// Event for each; or, with cert-manager, the Certificates it issues from.
async fn issue_certificates(
    rs: &RecipeStore,
    topology: &Topology,
    shards: usize,
    ctx: &Context,
    store_tls: &StoreTls,
    existing: &tls::Secrets,
    certificate_api: Option<&ApiResource>,
) -> Result<()> {
    let shards = u16::try_from(shards).unwrap_or(SLOTS);
    let owner = rs
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    if let Some(api_resource) = certificate_api {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &topology.namespace, api_resource);
        for certificate in tls::certificates(store_tls, topology, shards, &owner, api_resource) {
            api.patch(
                &certificate.name_any(),
                &apply_params(),
                &Patch::Apply(&certificate),
            )
            .await
            .map_err(Error::kube("apply Certificate"))?;
        }
    }
    let issued = tls::to_issue(store_tls, topology, shards, &owner, existing)
        .map_err(Error::Certificates)?;
    for secret in issued {
        apply_one::<Secret>(
            &ctx.client,
            &topology.namespace,
            &secret,
            "apply TLS Secret",
        )
        .await?;
        let name = secret.name_any();
        info!(secret = %name, "issued a certificate");
        publish(
            ctx,
            rs,
            EventType::Normal,
            "CertificateIssued",
            "IssueCertificate",
            format!("issued {name}"),
        )
        .await?;
    }
    Ok(())
}

/// Step 2: what the schema and CEL rules should already have refused, checked
/// again because the CRD in the cluster may be older than this operator.
pub fn validate(spec: &RecipeStoreSpec, statefulset: Option<&StatefulSet>) -> Result<(), String> {
    if spec.replicas < 1 {
        return Err(format!(
            "replicas must be at least 1, not {}",
            spec.replicas
        ));
    }
    if spec.image.is_empty() {
        return Err("image must not be empty".to_owned());
    }
    if let Some(backup) = &spec.backup {
        validate_backup(backup)?;
    }
    // The node refuses exactly these settings at start-up, so a store
    // given them would never run.
    spec.node_settings()
        .validate()
        .map_err(|error| error.to_string())?;
    let claimed = statefulset
        .and_then(|s| {
            s.spec
                .as_ref()?
                .volume_claim_templates
                .as_ref()?
                .first()?
                .spec
                .as_ref()?
                .resources
                .clone()
        })
        .and_then(|r| r.requests?.get("storage").cloned());
    if let Some(claimed) = claimed
        && claimed != spec.storage.size
    {
        return Err(format!(
            "storage is immutable: the StatefulSet claims {} per node, the spec asks for {}",
            claimed.0, spec.storage.size.0
        ));
    }
    Ok(())
}

/// What a store of several shards cannot do yet, and shard objects named
/// like another store's. `spec.shards` out of range is refused here too,
/// for a CRD installed without the schema's bounds.
fn validate_shards(rs: &RecipeStore, world: &World) -> Result<(), String> {
    let spec = &rs.spec;
    if !(1..=i32::from(SLOTS)).contains(&spec.shards) {
        return Err(format!(
            "shards must be 1 to {SLOTS} (a shard owns at least one of the {SLOTS} hash slots), not {}",
            spec.shards
        ));
    }
    let sharded = world.shards.len() > 1;
    if sharded && spec.backup.is_some() {
        return Err(format!(
            "backup is not supported on a store of several shards (this store has {}): a backup \
             holds the recipes of one Raft group, and one of each shard would not be a snapshot \
             of the store at one point; remove spec.backup, or keep the store at 1 shard",
            world.shards.len()
        ));
    }
    if sharded && spec.restore_from.is_some() {
        return Err(format!(
            "restoreFrom is not supported on a store of several shards (this one asks for {}): a \
             backup holds one Raft group's recipes; restore into a store of 1 shard",
            world.shards.len()
        ));
    }
    if sharded
        && rs
            .annotations()
            .contains_key(membership::FORCE_RECOVERY_ANNOTATION)
    {
        return Err(format!(
            "the {} annotation is not supported on a store of several shards: it names a member \
             by its ordinal, which every shard has; remove it",
            membership::FORCE_RECOVERY_ANNOTATION
        ));
    }
    // Shard k of store `x` is named like shard 0 of a store `x-s<k>`: the
    // one that came second is refused, never given the other's objects.
    // Shard 0 refuses only another owner, as it always took over a
    // StatefulSet of its name that nobody owns.
    let uid = rs.metadata.uid.as_deref();
    for shard in &world.shards {
        let Some(statefulset) = &shard.statefulset else {
            continue;
        };
        let owner = statefulset
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        let ours = match owner {
            Some(owner) => Some(owner.uid.as_str()) == uid,
            None => shard.topology.shard == 0,
        };
        if !ours {
            return Err(format!(
                "the StatefulSet {} that shard {} would be has another owner ({}): shard k of \
                 a store x is x-s<k>, which is also shard 0 of a store named x-s<k>; rename \
                 one of the stores",
                shard.topology.statefulset(),
                shard.topology.shard,
                owner.map_or_else(
                    || "none, not the operator".to_owned(),
                    |r| format!("{} {}", r.kind, r.name)
                ),
            ));
        }
    }
    Ok(())
}

/// The CronJob API checks the schedule too, but its refusal would come
/// from an apply on every reconcile; this says which field is wrong.
fn validate_backup(backup: &crate::crd::BackupSpec) -> Result<(), String> {
    const MACROS: &[&str] = &[
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    let schedule = backup.schedule.trim();
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    let cron_field = |f: &&str| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || "*/,-?".contains(c))
    };
    let valid = MACROS.contains(&schedule) || (fields.len() == 5 && fields.iter().all(cron_field));
    if !valid {
        return Err(format!(
            "backup.schedule {:?} is not a cron schedule: five fields (minute hour day-of-month month day-of-week, such as \"0 */6 * * *\") or one of {}",
            backup.schedule,
            MACROS.join(", ")
        ));
    }
    if backup.retain == 0 {
        return Err("backup.retain must be at least 1".to_owned());
    }
    if backup.claim_name.is_some() == backup.s3.is_some() {
        return Err(
            "backup needs exactly one of claimName (a PersistentVolumeClaim) and s3 (a bucket)"
                .to_owned(),
        );
    }
    Ok(())
}

async fn report_invalid(
    rs: &RecipeStore,
    topology: &Topology,
    ctx: &Context,
    problem: &str,
) -> Result<()> {
    publish(
        ctx,
        rs,
        EventType::Warning,
        "InvalidSpec",
        "Validate",
        problem.to_owned(),
    )
    .await?;
    let status = status::invalid(
        rs.metadata.generation,
        topology,
        problem,
        rs.status.as_ref(),
        &now(),
    );
    patch_status(rs, topology, ctx, &status).await
}

/// Step 4a: server-side apply of every owned object, configuration first.
/// Answers the backup CronJob as applied, with its status.
/// A sharded store's pods are marked serving first, so that the client
/// Service finds them when it first selects by that mark.
async fn apply(
    rs: &RecipeStore,
    topology: &Topology,
    ctx: &Context,
    world: &World,
    serving: Option<&placement::SlotMap>,
    resources: &Resources,
    service_monitor: Option<&ApiResource>,
) -> Result<Option<CronJob>> {
    let ns = &topology.namespace;
    let client = &ctx.client;
    apply_one::<ConfigMap>(client, ns, &resources.config_map, "apply ConfigMap").await?;
    if world.shards.len() > 1 {
        mark_serving_pods(ctx, world, serving).await?;
    }
    for (k, shard) in resources.shards.iter().enumerate() {
        apply_one::<Service>(client, ns, &shard.peer_service, "apply peer Service").await?;
        if k == 0 {
            apply_one::<Service>(
                client,
                ns,
                &resources.client_service,
                "apply client Service",
            )
            .await?;
        }
        apply_one::<PodDisruptionBudget>(client, ns, &shard.pdb, "apply PodDisruptionBudget")
            .await?;
        apply_one::<StatefulSet>(client, ns, &shard.statefulset, "apply StatefulSet").await?;
    }
    let backup = apply_backup(rs, topology, ctx, resources.backup.as_ref()).await?;

    if let Some(api_resource) = service_monitor {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, api_resource);
        match &resources.service_monitor {
            Some(object) => {
                match api
                    .patch(&object.name_any(), &apply_params(), &Patch::Apply(object))
                    .await
                {
                    Ok(_) => {}
                    // The API went away since it was discovered (the
                    // Prometheus operator was uninstalled): look again and
                    // go on without it; the status says so.
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        warn!("the ServiceMonitor API is gone; looking for optional APIs again");
                        ctx.integrations.refresh(client).await;
                    }
                    Err(source) => {
                        return Err(Error::Kube {
                            action: "apply ServiceMonitor",
                            source,
                        });
                    }
                }
            }
            // Turned off in the spec: remove the one this operator created.
            // Either the object or (a plain-text 404) the API may be gone.
            None if !rs.spec.monitoring.service_monitor.enabled => {
                delete_if_present(&api, topology.statefulset(), "delete ServiceMonitor").await?;
            }
            None => {}
        }
    }
    Ok(backup)
}

/// Marks the pods of the shards that serve slots with the label a sharded
/// store's client Service selects, and unmarks the others: a shard that
/// serves no slot would take writes for slots it does not own as if it
/// were an unsharded store. A pod recreated comes without the mark and is
/// marked on the next pass.
async fn mark_serving_pods(
    ctx: &Context,
    world: &World,
    serving: Option<&placement::SlotMap>,
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &world.shard0().topology.namespace);
    for shard in &world.shards {
        let serves = serving.is_some_and(|map| map.serves(shard.topology.shard));
        for (&ordinal, &marked) in &shard.serving_pods {
            if marked == serves {
                continue;
            }
            let value = serves.then_some("true");
            let patch = json!({"metadata": {"labels": {SERVING_LABEL: value}}});
            pods.patch(
                &shard.topology.pod(ordinal),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(Error::kube("label pod"))?;
        }
    }
    Ok(())
}

/// Applies the backup CronJob, or deletes it once `spec.backup` is gone
/// (known from the status, so that stores that never had backups cost no
/// request).
async fn apply_backup(
    rs: &RecipeStore,
    topology: &Topology,
    ctx: &Context,
    cronjob: Option<&CronJob>,
) -> Result<Option<CronJob>> {
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &topology.namespace);
    if let Some(cronjob) = cronjob {
        let applied = api
            .patch(&cronjob.name_any(), &apply_params(), &Patch::Apply(cronjob))
            .await
            .map_err(Error::kube("apply backup CronJob"))?;
        return Ok(Some(applied));
    }
    if rs.status.as_ref().is_some_and(|s| s.backup.is_some()) {
        delete_if_present(&api, &topology.backup_cronjob(), "delete backup CronJob").await?;
    }
    Ok(None)
}

/// Gives the running nodes the settings they take without a restart
/// (which therefore do not roll the pods), and says so in an Event.
async fn reload_settings(
    rs: &RecipeStore,
    ctx: &Context,
    admin: &dyn NodeAdmin,
    shard: &ShardWorld,
) -> Result<()> {
    let reloaded = executor::reconfigure(admin, &shard.membership, &rs.spec.shedding)
        .await
        .map_err(|source| Error::Membership {
            step: "Reconfigure",
            source,
        })?;
    if reloaded.is_empty() {
        return Ok(());
    }
    let pods: Vec<String> = reloaded.iter().map(|&id| shard.topology.pod(id)).collect();
    let note = format!("shedding settings reloaded on {pods:?}, without a restart");
    info!("{note}");
    publish(ctx, rs, EventType::Normal, "Reconfigured", "Settings", note).await
}

/// Deletes `name`; one already gone (a 404) is what was wanted.
async fn delete_if_present<K>(api: &Api<K>, name: &str, action: &'static str) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube { action, source }),
    }
}

/// Exports when the store's last backup succeeded, for the alert on
/// backups that stopped succeeding. Until one has, the time backups were
/// turned on stands in: a schedule that never succeeds must alert too.
fn record_backups(rs: &RecipeStore, topology: &Topology, ctx: &Context, cronjob: Option<&CronJob>) {
    let since = cronjob.and_then(|c| {
        let succeeded = c.status.as_ref()?.last_successful_time.as_ref();
        succeeded
            .or(c.metadata.creation_timestamp.as_ref())
            .map(|t| t.0.as_second())
    });
    let turned_on = cronjob.map(|_| since.unwrap_or_else(|| Timestamp::now().as_second()));
    ctx.metrics
        .set_backup_success(&topology.namespace, &rs.name_any(), turned_on);
}

/// The CronJob's last success, when the status does not know it yet.
fn newly_succeeded(rs: &RecipeStore, cronjob: Option<&CronJob>) -> Option<Time> {
    let succeeded = cronjob?.status.as_ref()?.last_successful_time.clone()?;
    let known = rs
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.last_successful_time.as_ref());
    (known != Some(&succeeded)).then_some(succeeded)
}

async fn apply_one<K>(
    client: &Client,
    namespace: &str,
    object: &K,
    action: &'static str,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(&object.name_any(), &apply_params(), &Patch::Apply(object))
        .await
        .map_err(Error::kube(action))?;
    Ok(())
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Step 4b: perform the planned membership step and tell people about it.
async fn perform(
    rs: &RecipeStore,
    topology: &Topology,
    ctx: &Context,
    admin: &dyn NodeAdmin,
    plan: &Plan,
) -> Result<()> {
    let step = &plan.step;
    if plan.clear_force_recovery {
        clear_force_recovery(rs, topology, ctx).await?;
    }
    let restart = match step {
        // The ConfigMap, applied before this, already names the member:
        // its new pod reads it at start.
        Step::ForceNewCluster { id } => {
            Some((id, "delete the pod of the member forcing a new cluster"))
        }
        // The StatefulSet controller recreates the pod from the update revision.
        Step::RestartMember { id, .. } => Some((id, "delete a pod to roll it")),
        _ => None,
    };
    // A pod already gone has its replacement on the way.
    if let Some((id, action)) = restart {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &topology.namespace);
        delete_if_present(&pods, &topology.pod(*id), action).await?;
    }
    // A sharded store's Events say which shard's group a step is in.
    let shard = match topology.shard {
        0 => String::new(),
        k => format!("shard {k}: "),
    };
    if let Err(source) = executor::execute(admin, plan).await {
        let error = Error::Membership {
            step: step.reason(),
            source,
        };
        let note = format!("{shard}{step} failed: {error}: {}", error_chain(&error));
        publish(
            ctx,
            rs,
            EventType::Warning,
            "MembershipStepFailed",
            step.reason(),
            note,
        )
        .await?;
        return Err(error);
    }
    let event_type = match step {
        Step::Refuse(_) => EventType::Warning,
        // A held roll is told, so that a roll that stops is explained.
        Step::Wait(membership::WaitReason::RollHeld(_)) => EventType::Normal,
        s if s.is_change() => EventType::Normal,
        _ => return Ok(()),
    };
    info!(step = step.reason(), shard = topology.shard, "{step}");
    ctx.metrics.membership_step(step);
    publish(
        ctx,
        rs,
        event_type,
        step.reason(),
        "Membership",
        format!("{shard}{step}"),
    )
    .await
}

/// Removes the force-recovery annotation once the recovery it asked for
/// is done: left in place, it would act on a later loss of quorum that no
/// person looked at.
async fn clear_force_recovery(rs: &RecipeStore, topology: &Topology, ctx: &Context) -> Result<()> {
    let api: Api<RecipeStore> = Api::namespaced(ctx.client.clone(), &topology.namespace);
    let patch = json!({"metadata": {"annotations": {membership::FORCE_RECOVERY_ANNOTATION: null}}});
    api.patch(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::kube("remove the force-recovery annotation"))?;
    info!(
        "a leader is back: removed the {} annotation",
        membership::FORCE_RECOVERY_ANNOTATION
    );
    Ok(())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.join(": ")
}

/// Most bytes the events API accepts in an Event's `action`.
const MAX_EVENT_ACTION_BYTES: usize = 128;

/// An Event's `action`: the step and what it says. The recorder folds
/// events with the same type, reason and action into one series that keeps
/// the first note, so an action shared by different steps ("adding node 1",
/// then "adding node 2") would show only the first; with the note in the
/// action each distinct step is an Event of its own, and only a repeat of
/// the very same step counts up.
fn event_action(action: &str, note: &str) -> String {
    let mut full = format!("{action}: {note}");
    if full.len() > MAX_EVENT_ACTION_BYTES {
        let mut end = MAX_EVENT_ACTION_BYTES;
        while !full.is_char_boundary(end) {
            end -= 1;
        }
        full.truncate(end);
    }
    full
}

async fn publish(
    ctx: &Context,
    rs: &RecipeStore,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) -> Result<()> {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        action: event_action(action, &note),
        note: Some(note),
        secondary: None,
    };
    ctx.recorder
        .publish(&event, &rs.object_ref(&()))
        .await
        .map_err(Error::kube("publish Event"))
}

/// Step 5: the status, from this pass's observation and plans.
#[allow(clippy::too_many_arguments)]
async fn update_status(
    rs: &RecipeStore,
    topology: &Topology,
    ctx: &Context,
    world: &World,
    plans: &[Plan],
    placement: &placement::Inputs,
    decision: &placement::Decision,
    backup: Option<&CronJob>,
) -> Result<()> {
    let backup = backup.map(|c| {
        let status = c.status.clone().unwrap_or_default();
        crate::crd::BackupStatus {
            last_schedule_time: status.last_schedule_time,
            last_successful_time: status.last_successful_time,
        }
    });
    let now = now();
    // Read again: applying may have found the API gone.
    let service_monitor_api = rs
        .spec
        .monitoring
        .service_monitor
        .enabled
        .then(|| ctx.integrations.service_monitor().is_some());
    let restored_members = build::restore::members(rs);
    let shards: Vec<_> = world
        .shards
        .iter()
        .zip(plans)
        .map(|(shard, plan)| {
            let sts_status = shard.statefulset.as_ref().and_then(|s| s.status.as_ref());
            let status = status::compute(&status::Inputs {
                generation: rs.metadata.generation,
                topology: &shard.topology,
                pods: sts_status.map_or(0, |s| s.replicas),
                ready_pods: sts_status.and_then(|s| s.ready_replicas).unwrap_or(0),
                observed: &shard.membership,
                plan,
                policy: &ctx.policy,
                previous: rs.status.as_ref(),
                backup: backup.clone(),
                restored_members,
                now: now.clone(),
                service_monitor_api,
            });
            (&shard.topology, status)
        })
        .collect();
    let status = status::of_shards(shards, placement, decision, rs.status.as_ref(), &now);
    ctx.metrics.set_slots_to_move(
        &topology.namespace,
        &rs.name_any(),
        status.placement.as_ref().map(|p| p.slots_to_move),
    );
    log_monitoring_change(rs.status.as_ref(), &status);
    patch_status(rs, topology, ctx, &status).await
}

/// Says in the log when the Monitoring condition changes, so that a
/// ServiceMonitor the spec asks for and the cluster cannot take is noticed.
fn log_monitoring_change(
    previous: Option<&crate::RecipeStoreStatus>,
    next: &crate::RecipeStoreStatus,
) {
    let monitoring = |s: &crate::RecipeStoreStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::MONITORING)
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    let now = monitoring(next);
    if previous.and_then(monitoring) != now
        && let Some((state, message)) = now
    {
        if state == "True" {
            info!("{message}");
        } else {
            warn!("{message}");
        }
    }
}

async fn patch_status(
    rs: &RecipeStore,
    topology: &Topology,
    ctx: &Context,
    status: &crate::RecipeStoreStatus,
) -> Result<()> {
    let api: Api<RecipeStore> = Api::namespaced(ctx.client.clone(), &topology.namespace);
    let patch = json!({
        "apiVersion": RecipeStore::api_version(&()),
        "kind": RecipeStore::kind(&()),
        "status": status,
    });
    api.patch_status(&rs.name_any(), &apply_params(), &Patch::Apply(patch))
        .await
        .map_err(Error::kube("update RecipeStore status"))?;
    Ok(())
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// The backoff after a failed watch. The controller's watches share one
/// backoff, so the failures of one event (an API server restart after an
/// etcd compaction answers every resumed watch with 410 Expired) compound:
/// kube-runtime's default (0.8 s doubling to 30 s) left the operator blind
/// for half a minute while it took the five 410s in turn. Start at 100 ms
/// and cap at 5 s: still a backoff for an API server that keeps failing.
fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(exponential),
        Duration::from_secs(60),
    )
}

/// How long a shutdown waits for reconciles under way to finish. Below the
/// pod's 30 s termination grace period, so the Lease is still released.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How long after a store was missed in the cache every store is
/// reconciled again (see `run`).
const MISSED_STORE_RETRY: Duration = Duration::from_secs(1);

/// Runs the controller over every namespace or only `namespace` until
/// `shutdown` completes, then lets reconciles under way finish (at most
/// [`SHUTDOWN_GRACE`]). Owned objects trigger a reconcile of their
/// RecipeStore when they change (pods through their StatefulSet's status).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let stores: Api<RecipeStore> = api(&client, &namespace);
    // Children carry our managed-by label: watching only those keeps the
    // caches small in clusters with many unrelated objects.
    let children =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}"));
    // After a watch expires (410), the watcher lists again and announces
    // each listed store before the cache holds the new list: a store
    // created meanwhile is then "not found in the local store" and its
    // reconcile dropped. Such a miss asks for every cached store to be
    // reconciled a moment later, by which time the cache has it (a store
    // really deleted is simply not among them).
    let (missed, misses) = tokio::sync::mpsc::unbounded_channel::<()>();
    let retries = futures::stream::unfold(misses, |mut misses| async move {
        misses.recv().await?;
        tokio::time::sleep(MISSED_STORE_RETRY).await;
        Some(((), misses))
    });
    let controller = Controller::new(stores, watcher::Config::default().any_semantic())
        .reconcile_all_on(retries)
        .trigger_backoff(watch_backoff())
        .owns(api::<StatefulSet>(&client, &namespace), children.clone())
        .owns(api::<Service>(&client, &namespace), children.clone())
        .owns(api::<ConfigMap>(&client, &namespace), children.clone())
        .owns(
            api::<PodDisruptionBudget>(&client, &namespace),
            children.clone(),
        )
        .owns(api::<CronJob>(&client, &namespace), children);
    let store = controller.store();
    let running = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(kube::runtime::controller::Error::ObjectNotFound(_)) = &result {
                let _ = missed.send(());
            }
            async move {
                match result {
                    Ok((object, _)) => tracing::debug!(object = %object.name, "reconciled"),
                    Err(error) => tracing::debug!(error = %error, "reconcile loop error"),
                }
            }
        });
    // The controller's graceful shutdown waits for its cache to fill before
    // it can end, and a cache whose watch keeps failing (the CRD removed,
    // RBAC missing, the API server away) never fills: bound the wait.
    let bounded = async {
        shutdown.await;
        if store.wait_until_ready().now_or_never().is_none() {
            info!("shutting down: nothing was reconciled yet");
            return;
        }
        info!(grace = ?SHUTDOWN_GRACE, "shutting down: letting reconciles under way finish");
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        warn!("reconciles did not finish within the shutdown grace; stopping them");
    };
    tokio::select! {
        () = running => info!("controller stopped"),
        () = bounded => {}
    }
}

#[cfg(test)]
mod tests;
