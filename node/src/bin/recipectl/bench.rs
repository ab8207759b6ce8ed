//! `recipectl bench`: closed-loop load against a running cluster, with
//! latency percentiles from an HDR histogram.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use clap::Args;
use clap::ValueEnum;
use hdrhistogram::Histogram;
use recipestore::client::Client;
use recipestore::client::RetryPolicy;
use recipestore::pb::Consistency;

use crate::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Uploads of fixed-size values over the key space.
    Write,
    /// Downloads of keys uploaded first.
    Read,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "write")]
    workload: Workload,
    /// Concurrent clients, each with one call in flight.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Size of each uploaded value, in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Consistency of reads.
    #[arg(long, value_enum, default_value = "linearizable")]
    consistency: crate::ConsistencyArg,
}

struct ClientResult {
    latencies: Histogram<u64>,
    errors: u64,
}

pub async fn run(
    endpoints: &[String],
    timeout: Duration,
    args: BenchArgs,
    output: Output,
) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(args.keys >= 1, "--keys must be at least 1");
    let client = Arc::new(Client::with_policy(
        endpoints,
        RetryPolicy::default(),
        timeout,
    )?);
    let value = vec![b'r'; args.value_size];
    if args.workload == Workload::Read {
        for k in 0..args.keys {
            client
                .upload(&format!("bench-{k}"), value.clone(), None)
                .await?;
        }
    }
    let duration = Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = client.clone();
        let value = value.clone();
        let (workload, keys, consistency) = (
            args.workload,
            args.keys,
            Consistency::from(args.consistency),
        );
        tasks.push(tokio::spawn(async move {
            let mut result = ClientResult {
                latencies: Histogram::new(3).expect("valid precision"),
                errors: 0,
            };
            let mut i = c;
            while started.elapsed() < duration {
                let key = format!("bench-{}", i % keys);
                i += stride(c);
                let t = Instant::now();
                let ok = match workload {
                    Workload::Write => client.upload(&key, value.clone(), None).await.is_ok(),
                    Workload::Read => client.download(&key, consistency, None).await.is_ok(),
                };
                if ok {
                    let _ = result.latencies.record(t.elapsed().as_micros() as u64);
                } else {
                    result.errors += 1;
                }
            }
            result
        }));
    }
    let mut latencies = Histogram::<u64>::new(3).expect("valid precision");
    let mut errors = 0;
    for task in tasks {
        let r = task.await?;
        latencies.add(&r.latencies)?;
        errors += r.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let throughput = latencies.len() as f64 / elapsed;
    if output == Output::Json {
        println!(
            "{}",
            serde_json::json!({
                "workload": format!("{:?}", args.workload).to_lowercase(), "clients": args.clients,
                "value_size": args.value_size, "seconds": elapsed, "ok": latencies.len(), "errors": errors,
                "ops_per_sec": throughput, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
                "mean_ms": latencies.mean() / 1000.0,
            })
        );
    } else {
        println!(
            "{:?} x{} clients, {} B values, {:.1} s: {} ok, {} errors, {:.0} ops/s; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} mean {:.2}",
            args.workload,
            args.clients,
            args.value_size,
            elapsed,
            latencies.len(),
            errors,
            throughput,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            latencies.mean() / 1000.0
        );
    }
    Ok(())
}

/// Spreads clients over the key space: each walks it with its own stride.
fn stride(client: usize) -> usize {
    2 * client + 1
}
