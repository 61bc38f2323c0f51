use crate::{column, config, fetch, start, tables};

#[tokio::test]
async fn host_tables_describe_this_machine() {
    let mut cfg = config();
    cfg.host_collectors = true;
    cfg.roles = vec!["dns".into(), "web".into()];
    let agent = start(cfg);
    assert!(
        tables(&["sys", "processes", "filesystem", "machinerole"]).is_subset(&agent.available())
    );

    let generation = fetch(&agent, &["sys", "processes", "filesystem", "machinerole"]).await;

    assert_eq!(column(&generation, "sys", "ip"), ["10.9.8.7"]);
    let memtotal: i64 = column(&generation, "sys", "memtotal")[0].parse().unwrap();
    assert!(
        memtotal > 1024 * 64,
        "memtotal {memtotal} KiB is implausible"
    );
    let ncpus: i64 = column(&generation, "sys", "ncpus")[0].parse().unwrap();
    assert!(ncpus >= 1);

    let me = std::process::id().to_string();
    let pids = column(&generation, "processes", "pid");
    let mine = pids
        .iter()
        .position(|p| *p == me)
        .expect("own pid in processes");
    let rss: i64 = column(&generation, "processes", "rss")[mine]
        .parse()
        .unwrap();
    // rss is KiB like memtotal: this test binary uses more than 1 MiB and
    // less than the whole machine.
    assert!(rss > 1024 && rss < memtotal, "rss {rss} KiB of {memtotal}");
    let schema = generation.table("processes").unwrap().schema().clone();
    for name in ["pid", "rss", "vsz"] {
        assert_eq!(
            schema.field_with_name(name).unwrap().data_type(),
            &arrow::datatypes::DataType::Int64
        );
    }

    let mounts = column(&generation, "filesystem", "mountp");
    assert!(!mounts.is_empty(), "no filesystems");
    let blocks = column(&generation, "filesystem", "blocks");
    let bavail = column(&generation, "filesystem", "bavail");
    for (b, a) in blocks.iter().zip(&bavail) {
        let (b, a): (i64, i64) = (b.parse().unwrap(), a.parse().unwrap());
        assert!(a <= b, "bavail {a} > blocks {b}");
    }

    assert_eq!(column(&generation, "machinerole", "role"), ["dns", "web"]);
    assert_eq!(
        column(&generation, "machinerole", "ip"),
        ["10.9.8.7", "10.9.8.7"]
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn host_tables_are_not_collected_unless_requested() {
    let mut cfg = config();
    cfg.host_collectors = true;
    let agent = start(cfg);
    let generation = fetch(&agent, &["sys"]).await;
    assert!(generation.table("sys").is_some());
    assert!(generation.table("processes").is_none());
    // Available (a parent may ask for it) but never collected.
    assert_eq!(agent.publishers("sys"), ["builtin:sys"]);
    assert!(agent.publishers("processes").is_empty());
    assert!(agent.available().contains("processes"));
    assert!(!generation.meta.visibility.tables.contains_key("processes"));
    agent.shutdown().await;
}
