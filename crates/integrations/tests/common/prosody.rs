//! A real Prosody XMPP server for tests: loopback, a free port, its own
//! config and data in a temporary directory, STARTTLS with a test CA, a
//! pubsub component, and accounts made with `prosodyctl`.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::{TestCerts, test_certs};

/// The XMPP domain every test account is in.
pub const DOMAIN: &str = "localhost";
/// The pubsub component's JID.
pub const PUBSUB: &str = "pubsub.localhost";

/// A running Prosody, stopped on drop.
#[derive(Debug)]
pub struct Prosody {
    child: Child,
    /// Client-to-server port on 127.0.0.1.
    pub port: u16,
    /// The CA clients must trust.
    pub ca: PathBuf,
    /// Config, data, certificates and log.
    pub dir: tempfile::TempDir,
    config: PathBuf,
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

impl Prosody {
    /// Starts Prosody with `users` (name, password); users in `admins` may
    /// create pubsub nodes (Prosody gives node creation to admins only).
    pub fn start(users: &[(&str, &str)], admins: &[&str]) -> Prosody {
        let dir = tempfile::tempdir().unwrap();
        let TestCerts { ca, cert, key } = test_certs(dir.path(), &[DOMAIN, PUBSUB]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let admins: Vec<String> = admins
            .iter()
            .map(|a| lua_string(&format!("{a}@{DOMAIN}")))
            .collect();
        let path = |p: &std::path::Path| lua_string(&p.display().to_string());
        let config = dir.path().join("prosody.cfg.lua");
        std::fs::write(
            &config,
            format!(
                r#"run_as_root = true
pidfile = {pid}
data_path = {data}
certificates = {certs}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = {log} }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping" }}
modules_disabled = {{ "s2s", "offline" }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = true
allow_registration = false
admins = {{ {admins} }}
ssl = {{ key = {key}, certificate = {cert} }}
VirtualHost "{DOMAIN}"
Component "{PUBSUB}" "pubsub"
"#,
                pid = path(&dir.path().join("prosody.pid")),
                data = path(&data),
                certs = path(dir.path()),
                log = path(&dir.path().join("prosody.log")),
                admins = admins.join(", "),
                key = path(&key),
                cert = path(&cert),
            ),
        )
        .unwrap();
        for (user, password) in users {
            let out = Command::new("prosodyctl")
                .arg("--config")
                .arg(&config)
                .args(["register", user, DOMAIN, password])
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run prosodyctl (see scripts/apt/xmpp.txt): {e}")
                });
            assert!(
                out.status.success(),
                "prosodyctl register {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let child = spawn(&config);
        let mut prosody = Prosody {
            child,
            port,
            ca,
            dir,
            config,
        };
        prosody.wait_listening();
        prosody
    }

    /// Stops the server and starts it again on the same port and data.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.config);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prosody exited before listening: {status}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "prosody never listened on {addr}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }

    /// TOML lines for an integration logging in as `user`.
    pub fn toml_account(&self, user: &str, password: &str) -> String {
        format!(
            "host = \"127.0.0.1\"\nport = {}\njid = \"{user}@{DOMAIN}\"\npassword = \"{password}\"\nca_file = {:?}\ntimeout = \"5s\"\n",
            self.port,
            self.ca.display().to_string()
        )
    }
}

fn spawn(config: &std::path::Path) -> Child {
    Command::new("prosody")
        .arg("--config")
        .arg(config)
        .arg("-F")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start prosody (see scripts/apt/xmpp.txt): {e}"))
}
