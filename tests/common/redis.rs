//! A real `redis-server` per test, on a free loopback port, that tests can kill
//! and restart. Also a 3-master Redis Cluster built with `redis-cli --cluster create`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        s.launch();
        s
    }

    /// A server that also speaks TLS (clients not asked for certificates),
    /// with a certificate for 127.0.0.1 from a test CA: the server, its TLS
    /// port, and the files (certificate, key, CA) written to `dir`.
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_tls(dir: &std::path::Path) -> (Self, u16, [PathBuf; 3]) {
        let files = tls_files(dir);
        let [cert, key, _] = &files;
        let port = free_port();
        let redis = Self::start_with(&[
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ]);
        (redis, port, files)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(self.port, &["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server on {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (empty: the server keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// SIGSTOP: the server holds every connection and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: it goes on with what it received meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill").args([sig, &c.id().to_string()]).status().map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "kill {sig}");
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args).unwrap_or_default()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis server's certificate (for 127.0.0.1), key and test CA, written to `dir`.
#[allow(dead_code)] // not every test binary uses it
pub fn tls_files(dir: &std::path::Path) -> [PathBuf; 3] {
    let ca = super::tls::Ca::new("redis test CA");
    let leaf = ca.issue(&["127.0.0.1"], "redis");
    let write = |name, text: &str| super::tls::write(dir, name, text);
    [write("redis.pem", &leaf.cert), write("redis.key", &leaf.key), write("ca.pem", &ca.pem())]
}

/// Three masters, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_nodes(Vec::new)
    }

    /// Three masters that also speak TLS with `cert` and `key` (the cluster
    /// bus too, trusting `ca`), and their `rediss://` URLs: a TLS client is
    /// told the nodes' TLS ports.
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> (Self, Vec<String>) {
        let mut urls = Vec::new();
        let cluster = Self::start_nodes(|| {
            let port = free_port().to_string();
            urls.push(format!("rediss://127.0.0.1:{port}"));
            let args = [
                ("--tls-port", port.as_str()),
                ("--tls-cert-file", cert.to_str().unwrap()),
                ("--tls-key-file", key.to_str().unwrap()),
                ("--tls-ca-cert-file", ca.to_str().unwrap()),
                ("--tls-auth-clients", "no"),
                ("--tls-cluster", "yes"),
            ];
            args.into_iter().flat_map(|(k, v)| [k.to_owned(), v.to_owned()]).collect()
        });
        (cluster, urls)
    }

    fn start_nodes(mut extra: impl FnMut() -> Vec<String>) -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let mut args =
                    vec!["--cluster-enabled".to_owned(), "yes".into(), "--cluster-node-timeout".into(), "2000".into()];
                args.extend(extra());
                RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            while !n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect()
    }
}
