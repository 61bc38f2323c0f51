//! `SqlNodeApps` over a SQL node without a fleet: what is configured runs,
//! what is not is off, and a bad part stops the start with its reason.

use std::sync::Arc;
use std::time::Duration;

use fleetsql_apps::{AppsConfig, AppsError, SqlNodeApps};
use fleetsql_sqlnode::{SqlNode, SqlNodeConfig};

fn node() -> Arc<SqlNode> {
    let config = SqlNodeConfig::new("apps-test", Duration::from_secs(1));
    Arc::new(SqlNode::start(config, Vec::new()).unwrap())
}

#[tokio::test]
async fn configured_apps_run_and_the_others_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts");
    std::fs::create_dir_all(&alerts).unwrap();
    let state = dir.path().join("state/of/this/node");
    let node = node();
    let apps = SqlNodeApps::start(
        node.clone(),
        AppsConfig {
            state_dir: Some(state.clone()),
            alerts_dir: Some(alerts),
            ..AppsConfig::default()
        },
    )
    .unwrap();
    assert!(state.join("alerts.db").exists(), "state under state_dir");
    let options = apps.console_options();
    assert!(options.alerts && options.persistent_queries && !options.reports);
    assert!(apps.alerts().is_some());
    let answer = node.query("SELECT count(*) FROM alerts").await.unwrap();
    assert_eq!(answer.batches[0].num_rows(), 1);
    apps.shutdown().await;

    // Nothing configured: persistent queries and the console only.
    let bare = SqlNodeApps::start(node.clone(), AppsConfig::default()).unwrap();
    assert!(bare.alerts().is_none());
    assert!(!bare.console_options().alerts && !bare.console_options().reports);
    bare.shutdown().await;
}

#[tokio::test]
async fn a_bad_part_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-reports");
    let err = SqlNodeApps::start(
        node(),
        AppsConfig {
            reports_dir: Some(missing.clone()),
            ..AppsConfig::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, AppsError::Reports { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-reports"), "{err}");

    // A table publisher needs a local agent, which a SQL node has not.
    let file = dir.path().join("integrations.toml");
    std::fs::write(
        &file,
        "[[prometheus]]\nname = \"node\"\nurl = \"http://127.0.0.1:9/metrics\"\n",
    )
    .unwrap();
    let err = SqlNodeApps::start(
        node(),
        AppsConfig {
            integrations: Some(file),
            ..AppsConfig::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("fleetsql agent"), "{err}");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source
            .as_deref()
            .is_some_and(|s| s.contains("needs a local agent")),
        "{source:?}"
    );

    let err = SqlNodeApps::start(
        node(),
        AppsConfig {
            alerts_dir: Some(dir.path().into()),
            ..AppsConfig::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("set state_dir"), "{err}");
}
