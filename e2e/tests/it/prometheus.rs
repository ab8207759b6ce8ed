//! A real Prometheus server (the Debian package `prometheus`) run by a test:
//! static scrape targets with the labels the dashboards expect, and instant
//! queries through its HTTP API over a plain HTTP/1.0 connection.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One scrape target and the labels attached to its series.
pub struct Target {
    pub address: String,
    pub labels: Vec<(String, String)>,
}

/// Targets sharing a job name (the `job` label).
pub struct Job {
    pub name: String,
    pub targets: Vec<Target>,
}

pub struct Prometheus {
    child: Child,
    address: String,
    log: std::path::PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping `jobs` every second and loading
    /// `rule_files`; returns once it answers queries.
    pub async fn start(dir: &Path, jobs: &[Job], rule_files: &[&Path]) -> anyhow::Result<Self> {
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|d| d.join("prometheus").is_file())
        });
        ensure!(
            found,
            "`prometheus` is not on PATH: run `apt-get install -y prometheus`"
        );
        std::fs::create_dir_all(dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_yaml(jobs, rule_files))?;
        let port = recipestore_testkit::free_port();
        let address = format!("127.0.0.1:{port}");
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start prometheus")?;
        let prometheus = Self {
            child,
            address,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match prometheus.get("/-/ready").await {
                Ok((200, _)) => return Ok(prometheus),
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => bail!(
                    "prometheus is not ready after 30 s ({other:?}):\n{}",
                    prometheus.log()
                ),
            }
        }
    }

    /// Prometheus' own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query; errors when Prometheus refuses it (a PromQL error).
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Sample>> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", url_encode(expr)))
            .await?;
        let reply: Value = serde_json::from_str(&body)
            .with_context(|| format!("HTTP {status}, not JSON: {body}"))?;
        ensure!(
            reply["status"] == "success",
            "{}: {}",
            reply["errorType"].as_str().unwrap_or("error"),
            reply["error"].as_str().unwrap_or(&body)
        );
        let data = &reply["data"];
        let samples = match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Sample {
                    labels: s["metric"].clone(),
                    value: value_of(&s["value"]),
                })
                .collect(),
            Some("scalar") => vec![Sample {
                labels: Value::Null,
                value: value_of(&data["result"]),
            }],
            other => bail!("unexpected result type {other:?}"),
        };
        Ok(samples)
    }

    /// Polls `expr` until it returns a sample, failing after `wait`.
    pub async fn await_data(&self, expr: &str, wait: Duration) -> anyhow::Result<Vec<Sample>> {
        let deadline = Instant::now() + wait;
        loop {
            let samples = self.query(expr).await?;
            if !samples.is_empty() {
                return Ok(samples);
            }
            ensure!(
                Instant::now() < deadline,
                "`{expr}` returned nothing within {wait:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A GET over HTTP/1.0 (the server closes the connection after the
    /// reply); returns the status code and the body.
    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = TcpStream::connect(&self.address).await?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.address
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
            .await
            .context("prometheus did not answer within 30 s")??;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("malformed HTTP response")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no HTTP status")?;
        Ok((status, body.to_owned()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series of an instant query's result.
#[derive(Debug)]
pub struct Sample {
    pub labels: Value,
    pub value: f64,
}

/// `[timestamp, "value"]` to the value (NaN when unparsable, like Prometheus' "NaN").
fn value_of(pair: &Value) -> f64 {
    pair[1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn config_yaml(jobs: &[Job], rule_files: &[&Path]) -> String {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    if !rule_files.is_empty() {
        yaml.push_str("rule_files:\n");
        for file in rule_files {
            yaml.push_str(&format!("  - {:?}\n", file.display().to_string()));
        }
    }
    yaml.push_str("scrape_configs:\n");
    for job in jobs {
        yaml.push_str(&format!(
            "  - job_name: {:?}\n    static_configs:\n",
            job.name
        ));
        for target in &job.targets {
            yaml.push_str(&format!(
                "      - targets: [{:?}]\n        labels:\n",
                target.address
            ));
            for (k, v) in &target.labels {
                yaml.push_str(&format!("          {k}: {v:?}\n"));
            }
        }
    }
    yaml
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
