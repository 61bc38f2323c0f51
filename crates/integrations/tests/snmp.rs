//! The SNMP gateway against a real `snmpd` on a loopback UDP port.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, StringArray};
use common::{RecordingAgent, eventually, free_port};
use fleetsql_integrations::{Integrations, IntegrationsConfig, TableTarget};

struct Snmpd(std::process::Child);

impl Drop for Snmpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// snmpd with a v2c community and two SNMPv3 users: `fleetpriv`
/// (authPriv, SHA + AES) and `fleetauth` (authNoPriv, SHA).
fn snmpd(dir: &std::path::Path, port: u16) -> Snmpd {
    let conf = dir.join("snmpd.conf");
    std::fs::write(
        &conf,
        format!(
            "agentAddress udp:127.0.0.1:{port}\nrocommunity fleettest 127.0.0.1\n\
             createUser fleetpriv SHA \"auth-secret-1\" AES \"priv-secret-1\"\n\
             createUser fleetauth SHA \"auth-secret-2\"\n\
             rouser fleetpriv priv\nrouser fleetauth auth\n"
        ),
    )
    .unwrap();
    let child = Command::new("snmpd")
        .args(["-f", "-Lf", "/dev/null", "-C", "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(dir.join("snmpd.pid"))
        // The v3 users' keys are persisted here, not in /var/lib/snmp.
        .env("SNMP_PERSISTENT_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("snmpd (see scripts/apt/integrations.txt)");
    Snmpd(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_table_becomes_a_fleet_table_and_bad_community_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _snmpd = snmpd(dir.path(), port);
    let agent = RecordingAgent::start();
    let target: Arc<dyn TableTarget> = agent.clone();
    let config = IntegrationsConfig::parse(&format!(
        r#"
        [[snmp]]
        name = "sw1"
        host = "127.0.0.1:{port}"
        community = "fleettest"
        interval = "500ms"
        timeout = "500ms"
        retry_min = "100ms"
        retry_max = "200ms"

        [[snmp]]
        name = "wrong"
        host = "127.0.0.1:{port}"
        community = "guess"
        timeout = "200ms"
        retry_min = "100ms"
        retry_max = "200ms"
        "#
    ))
    .unwrap();
    let integrations = Integrations::start(&config, Some(target), None).unwrap();
    // snmpd answers once it is up; until then the poll fails and is retried.
    let table = eventually(20, "snmp_iftable", || agent.table("snmp_iftable")).await;
    assert!(table.num_rows() >= 1, "at least the loopback interface");
    let descr = table
        .column_by_name("ifdescr")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert!(
        (0..descr.len()).any(|i| descr.value(i) == "lo"),
        "{table:?}"
    );
    let index = table
        .column_by_name("ifindex")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert!(index.value(0) >= 1);
    assert!(table.column_by_name("ifinoctets").is_some());
    assert_eq!(agent.agent.publishers("snmp_iftable"), ["snmp:sw1"]);

    let wrong = integrations
        // Until snmpd listens the polls fail for another reason.
        .wait_health("wrong", Duration::from_secs(10), |h| {
            h.failures >= 2
                && h.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("community"))
        })
        .await
        .unwrap();
    assert_eq!(wrong.status, "failing");
    assert!(wrong.last_error.unwrap().contains("community"));
    integrations.shutdown().await;
}

fn descriptions(table: &arrow::array::RecordBatch) -> Vec<String> {
    let descr = table
        .column_by_name("ifdescr")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    (0..descr.len())
        .map(|i| descr.value(i).to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpv3_auth_priv_and_auth_no_priv_walk_and_wrong_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _snmpd = snmpd(dir.path(), port);
    let agent = RecordingAgent::start();
    let target: Arc<dyn TableTarget> = agent.clone();
    let device = |name: &str, prefix: &str, user: &str, auth: &str, privacy: Option<&str>| {
        format!(
            "[[snmp]]\nname = \"{name}\"\nhost = \"127.0.0.1:{port}\"\nversion = \"3\"\n\
             user = \"{user}\"\nauth_protocol = \"SHA\"\nauth_password = \"{auth}\"\n{}\
             table_prefix = \"{prefix}\"\ninterval = \"500ms\"\ntimeout = \"500ms\"\n\
             retry_min = \"100ms\"\nretry_max = \"200ms\"\n\n",
            privacy.map_or(String::new(), |p| format!(
                "priv_protocol = \"AES\"\npriv_password = \"{p}\"\n"
            ))
        )
    };
    let config = IntegrationsConfig::parse(
        &[
            device(
                "priv",
                "v3priv_",
                "fleetpriv",
                "auth-secret-1",
                Some("priv-secret-1"),
            ),
            device("auth", "v3auth_", "fleetauth", "auth-secret-2", None),
            device(
                "bad-auth",
                "x_",
                "fleetpriv",
                "not-the-secret",
                Some("priv-secret-1"),
            ),
            device(
                "bad-priv",
                "y_",
                "fleetpriv",
                "auth-secret-1",
                Some("not-the-secret"),
            ),
            device("bad-user", "z_", "nobody", "auth-secret-1", None),
        ]
        .concat(),
    )
    .unwrap();
    let integrations = Integrations::start(&config, Some(target), None).unwrap();
    let private = eventually(20, "v3priv_iftable", || agent.table("v3priv_iftable")).await;
    assert!(
        descriptions(&private).contains(&"lo".to_string()),
        "{private:?}"
    );
    let authenticated = eventually(20, "v3auth_iftable", || agent.table("v3auth_iftable")).await;
    assert_eq!(descriptions(&authenticated), descriptions(&private));
    for (name, needle) in [
        ("bad-auth", "wrong digest; check auth_password"),
        ("bad-priv", "priv_password"),
        ("bad-user", "unknown user name"),
    ] {
        let h = integrations
            // Until snmpd listens the polls fail for another reason.
            .wait_health(name, Duration::from_secs(10), |h| {
                h.failures >= 2 && h.last_error.as_deref().is_some_and(|e| e.contains(needle))
            })
            .await
            .unwrap();
        assert_eq!(h.status, "failing", "{h:?}");
        let error = h.last_error.unwrap_or_default();
        assert!(error.contains(needle), "{name}: {error}");
    }
    integrations.shutdown().await;
}
