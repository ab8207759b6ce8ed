//! A private network for a run: every node in its own network namespace,
//! joined to a bridge in this one by a veth pair, on a /24 of its own. The
//! workload's clients stay here and reach every node through the bridge;
//! partitions are iptables rules inside the nodes' namespaces, so they cut
//! node-to-node traffic only, as a switch failure between racks would.
//! Needs root, `ip` and `iptables`.

use std::process::Command;

use rand::Rng;

/// The namespaces, veths and bridge of one run; removed on drop.
pub struct Network {
    bridge: String,
    namespaces: Vec<String>,
    subnet: u8,
}

fn sh(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Network {
    /// Creates the bridge and one namespace per node id in `0..nodes`.
    pub fn create(nodes: u64) -> anyhow::Result<Self> {
        let tag: u32 = rand::rng().random_range(0..100_000);
        let subnet = rand::rng().random_range(100..250u8);
        let mut network = Self {
            bridge: format!("rsbr{tag}"),
            namespaces: Vec::new(),
            subnet,
        };
        sh("ip", &["link", "add", &network.bridge, "type", "bridge"])?;
        let bridge_ip = format!("10.{subnet}.0.254/24");
        sh("ip", &["addr", "add", &bridge_ip, "dev", &network.bridge])?;
        sh("ip", &["link", "set", &network.bridge, "up"])?;
        // Where bridged frames go through iptables (br_netfilter, as Docker
        // sets it up, with a FORWARD policy of DROP), let the bridge's own
        // traffic pass.
        sh("iptables", &network.forward_rule("-I"))?;
        for id in 0..nodes {
            let ns = format!("rs{tag}n{id}");
            let outer = format!("rs{tag}v{id}");
            sh("ip", &["netns", "add", &ns])?;
            network.namespaces.push(ns.clone());
            sh(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            sh("ip", &["link", "set", &outer, "master", &network.bridge])?;
            sh("ip", &["link", "set", &outer, "up"])?;
            let ip = format!("{}/24", network.host(id));
            let inside = |args: &[&str]| {
                let mut full = vec!["netns", "exec", ns.as_str(), "ip"];
                full.extend_from_slice(args);
                sh("ip", &full)
            };
            inside(&["addr", "add", &ip, "dev", "eth0"])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    fn forward_rule<'a>(&'a self, action: &'a str) -> Vec<&'a str> {
        let bridge = self.bridge.as_str();
        vec![
            action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
        ]
    }

    /// The IP of node `id`.
    pub fn host(&self, id: u64) -> String {
        format!("10.{}.0.{}", self.subnet, id + 1)
    }

    /// The command prefix that starts a process in node `id`'s namespace.
    pub fn launcher(&self, id: u64) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespaces[id as usize]]
            .map(str::to_owned)
            .to_vec()
    }

    fn iptables(&self, id: u64, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec![
            "netns",
            "exec",
            self.namespaces[id as usize].as_str(),
            "iptables",
        ];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// Drops every packet between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) -> anyhow::Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            let peer = self.host(to);
            self.iptables(from, &["-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
            self.iptables(from, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&self) -> anyhow::Result<()> {
        for id in 0..self.namespaces.len() as u64 {
            self.iptables(id, &["-F", "INPUT"])?;
            self.iptables(id, &["-F", "OUTPUT"])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the
        // other end.
        for ns in &self.namespaces {
            let _ = sh("ip", &["netns", "delete", ns]);
        }
        let _ = sh("iptables", &self.forward_rule("-D"));
        let _ = sh("ip", &["link", "delete", &self.bridge]);
    }
}
