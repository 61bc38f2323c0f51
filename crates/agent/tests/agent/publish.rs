use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use arrow::ipc::writer::StreamWriter;

use crate::{column, config, fetch, post, send, start, url};

#[tokio::test]
async fn each_format_arrives_with_origin_columns() {
    let agent = start(config());
    let (status, answer) = post(
        &agent,
        "ndj",
        "application/x-ndjson",
        "{\"a\":1,\"b\":\"x\"}\n{\"a\":2,\"b\":\"y\"}\n",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows_accepted"], 2);
    assert_eq!(answer["publisher"], "http");
    assert_eq!(answer["table"], "ndj");
    assert_eq!(answer["requested"], false);
    let (status, _) = post(&agent, "csvt", "text/csv; charset=utf-8", "a,b\n1,x\n").await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &agent,
        "tsvt",
        "text/tab-separated-values",
        "a\tb\n1\tx\n2\ty\n3\tz\n",
    )
    .await;
    assert_eq!(status, 200);
    let batch = RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(vec![7, 8])) as _),
        ("f", Arc::new(Float64Array::from(vec![0.5, 1.5])) as _),
    ])
    .unwrap();
    let mut ipc = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
    }
    let (status, answer) = post(&agent, "arrowt", "application/vnd.apache.arrow.stream", ipc).await;
    assert_eq!(status, 200, "{answer}");

    let generation = fetch(&agent, &["ndj", "csvt", "tsvt", "arrowt"]).await;
    for (table, rows) in [("ndj", 2), ("csvt", 1), ("tsvt", 3), ("arrowt", 2)] {
        let t = generation.table(table).unwrap();
        assert_eq!(t.num_rows(), rows, "{table}");
        assert_eq!(
            t.schema().field_with_name("a").unwrap().data_type(),
            &DataType::Int64
        );
        assert_eq!(column(&generation, table, "_host"), vec!["testhost"; rows]);
        assert_eq!(column(&generation, table, "_ip"), vec!["10.9.8.7"; rows]);
        assert_eq!(
            column(&generation, table, "_cluster"),
            vec!["testcluster"; rows]
        );
        assert!(t.schema().field_with_name("_published_at").is_ok());
        let v = &generation.meta.visibility.tables[table];
        assert_eq!(
            (v.machines_with_rows, v.machines_empty, v.rows),
            (1, 0, rows as u64)
        );
    }
    let cluster = &generation.meta.visibility.clusters["testcluster"];
    assert_eq!((cluster.machines_expected, cluster.machines_seen), (1, 1));
    assert!(generation.meta.available.contains("arrowt"));
    // Now the tables are requested, and a publish says so.
    let (_, answer) = post(
        &agent,
        "ndj",
        "application/x-ndjson",
        "{\"a\":3,\"b\":\"z\"}\n",
    )
    .await;
    assert_eq!(answer["requested"], true);
    assert!(
        answer["requested_tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "csvt")
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn a_publish_replaces_only_its_publishers_rows() {
    let agent = start(config());
    let client = reqwest::Client::new();
    let publish = |who: &'static str, body: &'static str| {
        client
            .post(url(&agent, "/v1/tables/jobs"))
            .header("content-type", "text/csv")
            .header("x-fleetsql-publisher", who)
            .body(body)
    };
    assert_eq!(send(publish("cron", "job,n\na,1\nb,2\n")).await.0, 200);
    assert_eq!(send(publish("web", "job,n\nw,10\n")).await.0, 200);
    let mut jobs = column(&*fetch(&agent, &["jobs"]).await, "jobs", "job");
    jobs.sort();
    assert_eq!(jobs, ["a", "b", "w"]);

    // cron publishes again: its two rows become one, web's row stays.
    assert_eq!(send(publish("cron", "job,n\nc,3\n")).await.0, 200);
    let mut jobs = column(&*fetch(&agent, &["jobs"]).await, "jobs", "job");
    jobs.sort();
    assert_eq!(jobs, ["c", "w"]);

    // web withdraws; withdrawing twice is a 404.
    let delete = || {
        client
            .delete(url(&agent, "/v1/tables/jobs"))
            .header("x-fleetsql-publisher", "web")
    };
    let (status, answer) = send(delete()).await;
    assert_eq!((status, answer["rows_withdrawn"].as_u64()), (200, Some(1)));
    assert_eq!(send(delete()).await.0, 404);
    assert_eq!(
        column(&*fetch(&agent, &["jobs"]).await, "jobs", "job"),
        ["c"]
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn publishers_with_different_columns_are_unified() {
    let agent = start(config());
    let client = reqwest::Client::new();
    let publish = |who: &'static str, body: &'static str| {
        client
            .post(url(&agent, "/v1/tables/mixed"))
            .header("content-type", "application/x-ndjson")
            .header("x-fleetsql-publisher", who)
            .body(body)
    };
    assert_eq!(send(publish("p1", "{\"v\":1}\n")).await.0, 200);
    assert_eq!(
        send(publish("p2", "{\"v\":2.5,\"extra\":\"e\"}\n")).await.0,
        200
    );
    let generation = fetch(&agent, &["mixed"]).await;
    let table = generation.table("mixed").unwrap();
    assert_eq!(
        table.schema().field_with_name("v").unwrap().data_type(),
        &DataType::Float64
    );
    let mut extra = column(&generation, "mixed", "extra");
    extra.sort();
    assert_eq!(extra, ["", "e"], "the missing column reads as null");
    agent.shutdown().await;
}

/// Every bad input gets its status and an `{error, hint}` body, and the
/// rows published before stay.
#[tokio::test]
async fn bad_input_is_refused_and_previous_rows_stay() {
    let mut cfg = config();
    cfg.max_body_bytes = 1024;
    let agent = start(cfg);
    let ok = post(
        &agent,
        "good",
        "application/x-ndjson",
        "{\"n\":1,\"s\":\"a\"}\n{\"n\":2,\"s\":\"b\"}\n",
    )
    .await;
    assert_eq!(ok.0, 200);

    let big = format!("n,s\n{}", "1,a\n".repeat(400));
    let cases: Vec<(&str, &str, &str, String, u16)> = vec![
        (
            "malformed ndjson",
            "good",
            "application/x-ndjson",
            "{\"n\":3,\n".into(),
            400,
        ),
        (
            "malformed csv",
            "good",
            "text/csv",
            "n,s\n1,a,extra,fields\n2\n".into(),
            400,
        ),
        (
            "malformed arrow",
            "good",
            "application/vnd.apache.arrow.stream",
            "not arrow".into(),
            400,
        ),
        (
            "type conflict",
            "good",
            "application/x-ndjson",
            "{\"n\":\"three\",\"s\":\"c\"}\n".into(),
            409,
        ),
        ("empty body", "good", "application/x-ndjson", "".into(), 400),
        ("blank body", "good", "text/csv", "  \n\n".into(), 400),
        ("oversized body", "good", "text/csv", big, 413),
        (
            "invalid table name",
            "Bad-Name",
            "text/csv",
            "n\n1\n".into(),
            400,
        ),
        (
            "reserved table name",
            "fleet_nodes",
            "text/csv",
            "n\n1\n".into(),
            400,
        ),
        (
            "reserved column",
            "good",
            "text/csv",
            "n,_host\n1,x\n".into(),
            422,
        ),
        (
            "unknown content type",
            "good",
            "application/xml",
            "<n>1</n>".into(),
            415,
        ),
        ("no content type", "good", "", "n\n1\n".into(), 415),
    ];
    for (what, table, content_type, body, expected) in cases {
        let mut request = reqwest::Client::new()
            .post(url(&agent, &format!("/v1/tables/{table}")))
            .body(body);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let (status, answer) = send(request).await;
        assert_eq!(status, expected, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        let hint = answer["hint"].as_str().unwrap_or_default();
        assert!(!error.is_empty() && !hint.is_empty(), "{what}: {answer}");
    }
    let (status, answer) = send(
        reqwest::Client::new()
            .post(url(&agent, "/v1/tables/good"))
            .header("content-type", "text/csv")
            .header("x-fleetsql-publisher", "builtin:sys")
            .body("n\n1\n"),
    )
    .await;
    assert_eq!(status, 400, "{answer}");

    let generation = fetch(&agent, &["good"]).await;
    assert_eq!(column(&generation, "good", "s"), ["a", "b"]);
    assert_eq!(
        generation
            .table("good")
            .unwrap()
            .schema()
            .field_with_name("n")
            .unwrap()
            .data_type(),
        &DataType::Int64
    );
    // Strings meeting the same column were refused, but widening is fine.
    let (status, _) = post(
        &agent,
        "good",
        "application/x-ndjson",
        "{\"n\":2.5,\"s\":\"c\"}\n",
    )
    .await;
    assert_eq!(status, 200);
    agent.shutdown().await;
}

#[tokio::test]
async fn in_process_publish_has_the_same_checks() {
    let agent = start(config());
    let ints =
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
    let strings =
        RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["s"])) as _)]).unwrap();
    assert_eq!(agent.publish("inproc", "me", &ints).unwrap(), 1);
    assert!(agent.publish("inproc", "other", &strings).is_err());
    assert!(agent.publish("Bad", "me", &ints).is_err());
    assert!(agent.available().contains("inproc"));
    assert_eq!(
        fetch(&agent, &["inproc"])
            .await
            .table("inproc")
            .unwrap()
            .num_rows(),
        1
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn health_answers() {
    let agent = start(config());
    let body = reqwest::get(url(&agent, "/health"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
    agent.shutdown().await;
}
