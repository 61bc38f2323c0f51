use std::path::Path;

use crate::{column, config, fetch, start};

/// Writes like a script should: a hidden temporary file renamed into place.
fn drop_file(dir: &Path, name: &str, body: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test]
async fn files_are_added_replaced_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.drop_dir = Some(dir.path().join("drop"));
    let agent = start(cfg);
    let drop = dir.path().join("drop");
    assert!(drop.is_dir(), "the agent creates its drop directory");

    drop_file(&drop, "disks.csv", "dev,free\nsda,10\nsdb,20\n");
    drop_file(&drop, "events.jsonl", "{\"kind\":\"boot\"}\n");
    drop_file(&drop, "ports.tsv", "port\tproto\n22\ttcp\n");
    drop_file(&drop, "notes.txt", "ignored");
    let generation = fetch(&agent, &["disks", "events", "ports"]).await;
    assert_eq!(column(&generation, "disks", "dev"), ["sda", "sdb"]);
    assert_eq!(
        column(&generation, "disks", "_host"),
        ["testhost", "testhost"]
    );
    assert_eq!(column(&generation, "events", "kind"), ["boot"]);
    assert_eq!(column(&generation, "ports", "port"), ["22"]);
    assert!(!generation.meta.available.contains("notes"));

    // Replaced: new rows instead of the old ones.
    drop_file(&drop, "disks.csv", "dev,free\nsdc,30\n");
    let generation = fetch(&agent, &["disks"]).await;
    assert_eq!(column(&generation, "disks", "dev"), ["sdc"]);

    // A bad replacement is logged; the previous rows stay.
    drop_file(&drop, "disks.csv", "dev,free\nsdd,\"unterminated\n");
    drop_file(&drop, "events.jsonl", "{\"kind\":");
    let generation = fetch(&agent, &["disks", "events"]).await;
    assert_eq!(column(&generation, "disks", "dev"), ["sdc"]);
    assert_eq!(column(&generation, "events", "kind"), ["boot"]);

    // Deleted: the file's rows are withdrawn.
    std::fs::remove_file(drop.join("disks.csv")).unwrap();
    let generation = fetch(&agent, &["disks", "ports"]).await;
    assert!(generation.table("disks").is_none());
    assert_eq!(generation.meta.visibility.tables["disks"].machines_empty, 1);
    assert!(!generation.meta.available.contains("disks"));
    assert_eq!(column(&generation, "ports", "proto"), ["tcp"]);
    agent.shutdown().await;
}
