//! Durable registrations: what a restarted service registers again, and
//! what it refuses to start from.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Store, StoredQuery};
use crate::error::PqaError;
use crate::service::{PqaService, Publish, QueryInfo, ServiceConfig};
use crate::sink::{Sink, SinkFactory};
use crate::topic::Notification;

fn config() -> ServiceConfig {
    ServiceConfig {
        // Webhooks to a local receiver that never runs: they are stored, not called.
        webhook_allow_hosts: vec!["127.0.0.1".to_string()],
        ..ServiceConfig::default()
    }
}

fn open(path: &std::path::Path) -> PqaService {
    PqaService::with_store(config(), path).unwrap()
}

/// The fields that must survive, without the counters that do not.
fn durable(list: Vec<QueryInfo>) -> Vec<(String, String, Publish, String, u32, i64)> {
    list.into_iter()
        .map(|q| (q.id, q.epl, q.publish, q.topic, q.refs, q.created_ms))
        .collect()
}

#[derive(Debug)]
struct Named(String);

#[async_trait]
impl Sink for Named {
    fn name(&self) -> String {
        self.0.clone()
    }
    async fn deliver(&self, _n: &Notification, _json: &str) -> crate::Result<()> {
        Ok(())
    }
}

/// A factory requested as `rec`, recording whom it made sinks for.
#[derive(Debug, Default)]
struct Requested(Mutex<Vec<String>>);

impl SinkFactory for Requested {
    fn sinks_for(&self, id: &str, _epl: &str) -> Vec<Arc<dyn Sink>> {
        self.0.lock().push(id.to_string());
        vec![Arc::new(Named(format!("rec:{id}")))]
    }
    fn requested_as(&self) -> Option<&str> {
        Some("rec")
    }
}

#[tokio::test]
async fn registrations_survive_a_restart_with_their_ids_refs_webhooks_and_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("persistent_queries.db");
    let svc = open(&path);
    svc.add_sink_factory(Arc::new(Requested::default()));
    let hook = "http://127.0.0.1:9/hook";
    let a = svc
        .register("select x from s", Publish::All, Some(hook))
        .unwrap();
    let again = svc
        .register("select   x from s", Publish::All, None)
        .unwrap();
    assert_eq!(again.id, a.id);
    let b = svc
        .register_with_sinks(
            "select avg(x) as m from s.win:length(3)",
            Publish::Max,
            None,
            &["rec".to_string()],
        )
        .unwrap();
    let c = svc.register("select y from t", Publish::All, None).unwrap();
    assert_eq!(svc.delete(&c.id).unwrap(), 0, "deleted before the restart");
    let before = durable(svc.list());
    assert_eq!(before.len(), 2);
    drop(svc);

    let svc = open(&path);
    assert_eq!(
        durable(svc.list()),
        before,
        "same ids, statements, refs, times"
    );
    let listed = svc.list();
    let a_info = listed.iter().find(|q| q.id == a.id).unwrap();
    assert_eq!(a_info.webhooks, vec![hook.to_string()]);
    assert!(listed.iter().all(|q| q.error.is_none()), "{listed:?}");
    // The requested factory, added after the restore as integrations do,
    // serves the registration that asked for it and no other.
    let factory = Arc::new(Requested::default());
    svc.add_sink_factory(factory.clone());
    assert_eq!(*factory.0.lock(), vec![b.id.clone()]);
    assert!(svc.topic(&c.id).is_none(), "a deleted query stays deleted");

    // The restored query runs: events reach a subscriber of the same id.
    let mut sub = svc.subscribe(&a.id).unwrap();
    svc.push_event("s", &serde_json::json!({ "x": 7 })).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a notification")
        .expect("open");
    assert_eq!(got.notification.query, a.id);
    assert_eq!(got.notification.rows[0]["x"], 7);

    // References count on across the restart: two deletes to remove it.
    assert_eq!(svc.delete(&a.id).unwrap(), 1);
    drop(sub);
    drop(svc);
    let svc = open(&path);
    assert_eq!(svc.list().iter().find(|q| q.id == a.id).unwrap().refs, 1);
    assert_eq!(svc.delete(&a.id).unwrap(), 0);
    drop(svc);
    let svc = open(&path);
    assert_eq!(
        svc.list().into_iter().map(|q| q.id).collect::<Vec<_>>(),
        vec![b.id]
    );
}

#[tokio::test]
async fn stored_ids_are_kept_and_new_registrations_do_not_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pq.db");
    // As an older version might have written it: an id that is not the
    // hash this version computes for the text.
    let (store, _) = Store::open(&path).unwrap();
    let old = StoredQuery {
        id: "0123456789abcdef".to_string(),
        epl: "select x from s".to_string(),
        publish: "all".to_string(),
        refs: 1,
        webhooks: Vec::new(),
        sinks: Vec::new(),
        created_ms: 1_000,
    };
    store.put(&old).unwrap();
    drop(store);

    let svc = open(&path);
    let mut sub = svc.subscribe(&old.id).expect("the stored id is served");
    let fresh = svc
        .register("select x from s where x > 1", Publish::All, None)
        .unwrap();
    assert_ne!(fresh.id, old.id);
    // The same text registered under the new hash shares the running
    // statement but not the stored registration.
    let same_text = svc.register("select x from s", Publish::All, None).unwrap();
    assert_ne!(same_text.id, old.id);
    assert_eq!(svc.running_statements(), 2);
    svc.push_event("s", &serde_json::json!({ "x": 3 })).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a notification")
        .expect("open");
    assert_eq!(got.notification.query, old.id);
    drop(svc);
    let svc = open(&path);
    let ids: Vec<String> = svc.list().into_iter().map(|q| q.id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&old.id) && ids.contains(&fresh.id) && ids.contains(&same_text.id));
    let kept = svc.list().into_iter().find(|q| q.id == old.id).unwrap();
    assert_eq!((kept.created_ms, kept.refs), (1_000, 1));
}

#[tokio::test]
async fn an_unreadable_store_stops_the_start_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("persistent_queries.db");
    let garbage = b"{\"queries\": [ this is not SQLite".repeat(200);
    std::fs::write(&path, &garbage).unwrap();
    let err = PqaService::with_store(config(), &path).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PqaError::Store { .. }), "{err:?}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("not a SQLite database") && text.contains("move it aside"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file is untouched"
    );

    // A SQLite file of something else (say the alerts' state, named by mistake).
    let other = dir.path().join("alerts.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch(
        "CREATE TABLE alert_state (alert TEXT); INSERT INTO alert_state VALUES ('disk');",
    )
    .unwrap();
    drop(conn);
    let before = std::fs::read(&other).unwrap();
    let err = PqaService::with_store(config(), &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a persistent-query store"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), before);

    // A store of a newer version.
    let newer = dir.path().join("newer.db");
    drop(Store::open(&newer).unwrap());
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.pragma_update(None, "user_version", 9).unwrap();
    drop(conn);
    let err = PqaService::with_store(config(), &newer)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("newer fleetsql") && err.contains("version 9"),
        "{err}"
    );
}

#[tokio::test]
async fn a_stored_statement_that_no_longer_compiles_is_kept_listed_and_deletable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pq.db");
    let (store, _) = Store::open(&path).unwrap();
    let broken = StoredQuery {
        id: "feedfeedfeedfeed".to_string(),
        // As if a newer grammar had accepted it, or this one dropped it.
        epl: "select x from s.win:hologram(3)".to_string(),
        publish: "all".to_string(),
        refs: 2,
        webhooks: Vec::new(),
        sinks: Vec::new(),
        created_ms: 5,
    };
    let odd = StoredQuery {
        id: "abababababababab".to_string(),
        epl: "select x from s".to_string(),
        publish: "median".to_string(),
        ..broken.clone()
    };
    store.put(&broken).unwrap();
    store.put(&odd).unwrap();
    drop(store);

    let svc = open(&path);
    let good = svc.register("select y from s", Publish::All, None).unwrap();
    let listed = svc.list();
    assert_eq!(listed.len(), 3);
    let info = listed.iter().find(|q| q.id == broken.id).unwrap();
    let error = info.error.as_deref().expect("the reason is listed");
    assert!(
        error.contains("no longer compiles") && error.contains("hologram"),
        "{error}"
    );
    assert_eq!(info.epl, broken.epl);
    let info = listed.iter().find(|q| q.id == odd.id).unwrap();
    assert!(
        info.error.as_deref().unwrap_or("").contains("median"),
        "{info:?}"
    );
    // Only the good statement runs; events are no trouble for the others.
    assert_eq!(svc.running_statements(), 1);
    svc.push_event("s", &serde_json::json!({ "x": 1, "y": 2 }))
        .unwrap();
    // A reference dropped keeps it stored as it was; a restart keeps it.
    assert_eq!(svc.delete(&broken.id).unwrap(), 1);
    assert_eq!(svc.delete(&odd.id).unwrap(), 1);
    drop(svc);
    let svc = open(&path);
    let listed = svc.list();
    assert_eq!(listed.len(), 3, "nothing dropped: {listed:?}");
    assert!(listed.iter().any(|q| q.id == good.id && q.error.is_none()));
    let (_, stored) = {
        drop(svc);
        Store::open(&path).unwrap()
    };
    let odd_now = stored.iter().find(|q| q.id == odd.id).unwrap();
    assert_eq!(odd_now.publish, "median", "written back as it was");
    let svc = open(&path);
    assert_eq!(svc.delete(&broken.id).unwrap(), 0);
    drop(svc);
    let svc = open(&path);
    assert!(svc.list().iter().all(|q| q.id != broken.id));
}

#[tokio::test]
async fn a_change_the_store_cannot_keep_is_refused_and_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pq.db");
    let svc = open(&path);
    let kept = svc.register("select x from s", Publish::All, None).unwrap();
    // Another hand takes the table away under the node.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE persistent_query").unwrap();
    drop(conn);
    let err = svc
        .register("select y from s", Publish::All, None)
        .unwrap_err();
    assert!(matches!(err, PqaError::Store { .. }), "{err:?}");
    assert!(err.to_string().contains("not applied"), "{err}");
    assert_eq!(svc.list().len(), 1, "not registered in memory either");
    assert_eq!(svc.running_statements(), 1, "its statement was stopped");
    assert!(svc.register("select x from s", Publish::All, None).is_err());
    assert_eq!(svc.list()[0].refs, 1);
    assert!(svc.delete(&kept.id).is_err());
    assert!(
        svc.topic(&kept.id).is_some(),
        "a delete not stored is not done"
    );
}
