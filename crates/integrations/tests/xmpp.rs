//! XMPP pubsub sink and source against a real Prosody on loopback.

mod common;

use std::time::{Duration, Instant};

use common::free_port;
use common::prosody::{DOMAIN, PUBSUB, Prosody};
use fleetsql_integrations::xmpp_wire::{Account, Client, PubsubEvent, XmppError, pubsub_event};
use fleetsql_integrations::{Integrations, IntegrationsConfig};
use fleetsql_pqa::{PqaService, Publish, ServiceConfig};

fn account(prosody: &Prosody, user: &str, password: &str) -> Account {
    Account {
        host: "127.0.0.1".into(),
        port: prosody.port,
        jid: format!("{user}@{DOMAIN}"),
        password: password.into(),
        resource: format!("test-{}", free_port()),
        tls_server_name: None,
        ca_file: Some(prosody.ca.clone()),
        timeout: Duration::from_secs(5),
    }
}

/// Subscribes `client` to `node`, waiting (bounded) for the node to exist.
async fn subscribe_when_created(client: &mut Client, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.subscribe(PUBSUB, node).await {
            Ok(()) => return,
            Err(e) if e.is("item-not-found") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("subscribing to {node}: {e}"),
        }
    }
}

/// The next pubsub event `client` receives, within 10 s.
async fn next_event(client: &mut Client) -> PubsubEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        client.flush().await.unwrap();
        let stanza = tokio::time::timeout_at(deadline, client.next_stanza())
            .await
            .expect("a pubsub event within 10 s")
            .unwrap();
        if let Some(event) = pubsub_event(&stanza) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_become_items_of_a_node_that_goes_with_the_query() {
    let prosody = Prosody::start(
        &[("fleetsql", "s3cret"), ("watcher", "w4tch")],
        &["fleetsql"],
    );
    let config = IntegrationsConfig::parse(&format!(
        "[[xmpp_sink]]\nname = \"chat\"\n{}retry_min = \"100ms\"\n",
        prosody.toml_account("fleetsql", "s3cret")
    ))
    .unwrap();
    let pqa = PqaService::new(ServiceConfig::default());
    let integrations = Integrations::start(&config, None, Some(pqa.clone())).unwrap();
    let up = integrations
        .wait_health("chat", Duration::from_secs(20), |h| h.status == "ok")
        .await
        .unwrap();
    assert_eq!(up.status, "ok", "{up:?}\n{}", prosody.log());

    // A registration that does not ask for the sink gets no node.
    let other = pqa
        .register("select room from sensor", Publish::All, None)
        .unwrap();
    assert!(other.sinks.is_empty(), "{other:?}");

    let registered = pqa
        .register_with_sinks(
            "select room, temp from sensor where temp > 20",
            Publish::All,
            None,
            &["chat".to_string()],
        )
        .unwrap();
    let node = format!("fleetsql/pq/{}", registered.id);
    let handle = &registered.sinks[0];
    assert_eq!(handle["service"], PUBSUB, "{handle}");
    assert_eq!(handle["node"], node.as_str(), "{handle}");
    assert_eq!(handle["uri"], format!("xmpp:{PUBSUB}?;node={node}"));

    let mut watcher = Client::connect(&account(&prosody, "watcher", "w4tch"))
        .await
        .unwrap();
    subscribe_when_created(&mut watcher, &node).await;

    let events = [("a", 25), ("b", 10), ("c", 30)]
        .map(|(room, temp)| serde_json::json!({ "room": room, "temp": temp }));
    let pushed = pqa.push_events("sensor", &events);
    assert_eq!(pushed.accepted, 3, "{pushed:?}");

    let mut received = Vec::new();
    while received.len() < 2 {
        match next_event(&mut watcher).await {
            PubsubEvent::Items {
                service,
                node: n,
                items,
            } => {
                assert_eq!((service.as_str(), n.as_str()), (PUBSUB, node.as_str()));
                received.extend(items);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let rows: Vec<(String, serde_json::Value)> = received
        .iter()
        .map(|item| {
            let n: serde_json::Value = serde_json::from_str(item.json().unwrap()).unwrap();
            assert_eq!(n["query"], registered.id.as_str());
            assert_eq!(item.id.as_deref(), Some(n["seq"].to_string().as_str()));
            (n["seq"].to_string(), n["rows"].clone())
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("1".into(), serde_json::json!([{ "room": "a", "temp": 25 }])),
            ("2".into(), serde_json::json!([{ "room": "c", "temp": 30 }])),
        ]
    );
    // The node holds exactly those items.
    let stored = watcher.items(PUBSUB, &node).await.unwrap();
    let mut ids: Vec<_> = stored.iter().filter_map(|i| i.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["1", "2"]);

    assert_eq!(pqa.delete(&registered.id).unwrap(), 0);
    assert_eq!(
        next_event(&mut watcher).await,
        PubsubEvent::Deleted {
            service: PUBSUB.into(),
            node: node.clone()
        }
    );
    let gone = watcher.items(PUBSUB, &node).await.unwrap_err();
    assert!(gone.is("item-not-found"), "{gone:?}");

    let sink = integrations
        .wait_health("chat", Duration::from_secs(5), |h| h.items == 2)
        .await
        .unwrap();
    assert_eq!((sink.items, sink.bad_items), (2, 0), "{sink:?}");
    watcher.close().await;
    integrations.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_published_to_a_node_become_events() {
    let prosody = Prosody::start(&[("owner", "0wner"), ("reader", "r3ader")], &["owner"]);
    let mut owner = Client::connect(&account(&prosody, "owner", "0wner"))
        .await
        .unwrap();
    owner.create_node(PUBSUB, "alarms/site1").await.unwrap();
    let config = IntegrationsConfig::parse(&format!(
        "[[xmpp_source]]\nname = \"alarms\"\n{}stream = \"alarm\"\n\
         nodes = [{{ node = \"alarms/site1\" }}]\nretry_min = \"100ms\"\n",
        prosody.toml_account("reader", "r3ader")
    ))
    .unwrap();
    let pqa = PqaService::new(ServiceConfig::default());
    let registered = pqa
        .register("select site, level from alarm", Publish::All, None)
        .unwrap();
    let mut results = pqa.topic(&registered.id).unwrap().subscribe();
    let integrations = Integrations::start(&config, None, Some(pqa.clone())).unwrap();
    let up = integrations
        .wait_health("alarms", Duration::from_secs(20), |h| h.status == "ok")
        .await
        .unwrap();
    assert_eq!(up.status, "ok", "{up:?}");

    for (id, json) in [
        ("1", r#"{"site": "s1", "level": 3}"#),
        ("2", "not json at all"),
        (
            "3",
            r#"[{"site": "s2", "level": 1}, {"site": "s3", "level": 2}]"#,
        ),
    ] {
        owner
            .publish_json(PUBSUB, "alarms/site1", id, json)
            .await
            .unwrap();
    }
    let mut sites = Vec::new();
    while sites.len() < 3 {
        let p = tokio::time::timeout(Duration::from_secs(10), results.next())
            .await
            .expect("a result within 10 s")
            .unwrap();
        for row in &p.notification.rows {
            sites.push(row["site"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(sites, ["s1", "s2", "s3"]);
    let health = integrations
        .wait_health("alarms", Duration::from_secs(5), |h| {
            h.items == 3 && h.bad_items == 1
        })
        .await
        .unwrap();
    assert_eq!((health.items, health.bad_items), (3, 1), "{health:?}");
    assert!(
        health.last_error.as_deref().unwrap().contains("not JSON"),
        "{health:?}"
    );
    owner.close().await;
    integrations.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_unreachable_servers_are_reported_and_retried() {
    let prosody = Prosody::start(&[("fleetsql", "right")], &["fleetsql"]);
    let nobody = free_port();
    let config = IntegrationsConfig::parse(&format!(
        "[[xmpp_sink]]\nname = \"wrong-password\"\n{}retry_min = \"50ms\"\nretry_max = \"100ms\"\n\n\
         [[xmpp_source]]\nname = \"nobody\"\nhost = \"127.0.0.1\"\nport = {nobody}\n\
         jid = \"fleetsql@{DOMAIN}\"\npassword = \"right\"\nstream = \"x\"\nnodes = [{{ node = \"n\" }}]\n\
         retry_min = \"50ms\"\nretry_max = \"100ms\"\n\n\
         [[xmpp_source]]\nname = \"no-node\"\n{}stream = \"x\"\nnodes = [{{ node = \"missing\" }}]\n\
         retry_min = \"50ms\"\nretry_max = \"100ms\"\n",
        prosody.toml_account("fleetsql", "wrong"),
        prosody.toml_account("fleetsql", "right"),
    ))
    .unwrap();
    let pqa = PqaService::new(ServiceConfig::default());
    let integrations = Integrations::start(&config, None, Some(pqa.clone())).unwrap();
    for (name, needle) in [
        ("wrong-password", "not-authorized"),
        ("nobody", "is the server running?"),
        ("no-node", "item-not-found"),
    ] {
        let h = integrations
            .wait_health(name, Duration::from_secs(20), |h| h.failures >= 2)
            .await
            .unwrap();
        assert_eq!(h.status, "failing", "{h:?}");
        assert!(h.failures >= 2, "retried: {h:?}");
        let error = h.last_error.unwrap_or_default();
        assert!(error.contains(needle), "{name}: {error}");
        if name == "wrong-password" {
            assert!(error.contains("check jid and password"), "{error}");
        }
    }
    // Nothing waits on them: the engine still takes events and answers.
    let registered = pqa
        .register_with_sinks(
            "select a from x",
            Publish::All,
            None,
            &["wrong-password".into()],
        )
        .unwrap();
    let mut sub = pqa.topic(&registered.id).unwrap().subscribe();
    assert_eq!(
        pqa.push_events("x", &[serde_json::json!({ "a": 1 })])
            .accepted,
        1
    );
    let p = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.notification.rows[0]["a"], 1);
    integrations.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let prosody = Prosody::start(&[("fleetsql", "pw")], &[]);
    // Another CA than the one that signed the server's certificate.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = common::tls::test_certs(elsewhere.path(), &[DOMAIN]);
    let mut untrusting = account(&prosody, "fleetsql", "pw");
    untrusting.ca_file = Some(other.ca);
    let e = Client::connect(&untrusting).await.unwrap_err();
    assert!(
        matches!(&e, XmppError::Connection(m) if m.contains("TLS handshake failed")),
        "{e}"
    );
    // Trusting the test CA, the same account logs in.
    let client = Client::connect(&account(&prosody, "fleetsql", "pw"))
        .await
        .unwrap();
    assert!(
        client.jid().starts_with("fleetsql@localhost/"),
        "{}",
        client.jid()
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_reconnects_after_a_server_restart_and_delivers_what_waited() {
    let mut prosody = Prosody::start(
        &[("fleetsql", "s3cret"), ("watcher", "w4tch")],
        &["fleetsql"],
    );
    let config = IntegrationsConfig::parse(&format!(
        "[[xmpp_sink]]\nname = \"chat\"\nall_queries = true\n{}retry_min = \"50ms\"\nretry_max = \"200ms\"\n",
        prosody.toml_account("fleetsql", "s3cret")
    ))
    .unwrap();
    let pqa = PqaService::new(ServiceConfig::default());
    let integrations = Integrations::start(&config, None, Some(pqa.clone())).unwrap();
    // all_queries: a registration gets a node without asking.
    let registered = pqa.register("select n from x", Publish::All, None).unwrap();
    let node = format!("fleetsql/pq/{}", registered.id);
    assert_eq!(registered.sinks[0]["node"], node.as_str());
    let mut watcher = Client::connect(&account(&prosody, "watcher", "w4tch"))
        .await
        .unwrap();
    subscribe_when_created(&mut watcher, &node).await;
    watcher.close().await;

    prosody.restart();
    let down = integrations
        .wait_health("chat", Duration::from_secs(10), |h| h.failures >= 1)
        .await
        .unwrap();
    assert!(down.failures >= 1, "the sink noticed the restart: {down:?}");
    assert_eq!(
        pqa.push_events("x", &[serde_json::json!({ "n": 7 })])
            .accepted,
        1
    );
    let delivered = integrations
        .wait_health("chat", Duration::from_secs(20), |h| h.items == 1)
        .await
        .unwrap();
    assert_eq!(delivered.items, 1, "{delivered:?}\n{}", prosody.log());
    let mut watcher = Client::connect(&account(&prosody, "watcher", "w4tch"))
        .await
        .unwrap();
    let items = watcher.items(PUBSUB, &node).await.unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    let n: serde_json::Value = serde_json::from_str(items[0].json().unwrap()).unwrap();
    assert_eq!(n["rows"], serde_json::json!([{ "n": 7 }]));
    watcher.close().await;
    integrations.shutdown().await;
}
