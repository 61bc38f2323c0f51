//! Flight SQL against the real `fleetsql demo`: arrow-flight's own client
//! (statements, a prepared statement with a parameter, GetTables with
//! schemas, SQL info, a refused write, `SELECT *` over a join) and the ADBC
//! Flight SQL driver from PyPI (tests/clients/adbc_flightsql.py).

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{Int64Type, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::decode::DecodedPayload;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, SqlInfo};
use futures::TryStreamExt;
use tonic::transport::Channel;

use crate::cluster::TestDemo;

async fn client(demo: &TestDemo) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", demo.flightsql))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// The rows of the info's one endpoint, and the app_metadata of the
/// stream's first message (the generation the rows came from).
async fn read(
    client: &mut FlightSqlServiceClient<Channel>,
    info: &FlightInfo,
) -> (Vec<RecordBatch>, serde_json::Value) {
    assert_eq!(info.endpoint.len(), 1, "{info:?}");
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut decoder = client.do_get(ticket).await.unwrap().into_inner();
    let mut batches = Vec::new();
    let mut metadata = serde_json::Value::Null;
    while let Some(data) = decoder.try_next().await.unwrap() {
        match data.payload {
            DecodedPayload::Schema(_) if metadata.is_null() => {
                metadata = serde_json::from_slice(&data.app_metadata()).unwrap_or_default();
            }
            DecodedPayload::RecordBatch(batch) => batches.push(batch),
            _ => {}
        }
    }
    (batches, metadata)
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn info_generation(info: &FlightInfo) -> serde_json::Value {
    serde_json::from_slice(&info.app_metadata)
        .expect("FlightInfo app_metadata is GenerationInfo JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_client_queries_prepares_and_lists() {
    let demo = TestDemo::start().await;
    let mut client = client(&demo).await;
    let http_count = |body: serde_json::Value| body["rows"][0][0].as_i64().unwrap();
    let (_, body) = demo.query_json("SELECT count(*) FROM sys").await;
    let machines = http_count(body);
    let (_, body) = demo
        .query_json("SELECT count(*) FROM sys s JOIN machinerole m ON s.ip = m.ip")
        .await;
    let joined = http_count(body) as usize;
    assert!(machines > 0 && joined > 0);

    // A statement: FlightInfo says which generation, the stream reads it.
    let info = client
        .execute("SELECT count(*), max(memtotal) FROM sys".to_string(), None)
        .await
        .unwrap();
    let pinned = info_generation(&info);
    assert!(pinned["id"].as_u64().unwrap() > 0, "{pinned}");
    assert_eq!(
        pinned["machines_seen"], pinned["machines_expected"],
        "{pinned}"
    );
    let schema = info.clone().try_decode_schema().unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["count", "max"], "Postgres names, as on pg and HTTP");
    let (batches, streamed) = read(&mut client, &info).await;
    assert_eq!(
        streamed["id"], pinned["id"],
        "the ticket reads the generation its info described"
    );
    let count = batches[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(count, machines, "as HTTP answers");

    // A ticket read twice runs its statement again on the newest generation.
    let (again, rerun) = read(&mut client, &info).await;
    assert_eq!(rows(&again), 1);
    assert!(rerun["id"].as_u64().unwrap() >= pinned["id"].as_u64().unwrap());

    // SELECT * over a join: both `ip` columns, as Postgres answers.
    let info = client
        .execute(
            "SELECT * FROM sys s JOIN machinerole m ON s.ip = m.ip ORDER BY s.ip".to_string(),
            None,
        )
        .await
        .unwrap();
    let (batches, _) = read(&mut client, &info).await;
    assert_eq!(rows(&batches), joined);
    let schema = batches[0].schema();
    let ips = schema.fields().iter().filter(|f| f.name() == "ip").count();
    assert_eq!(ips, 2, "{schema:?}");

    // A prepared statement with a parameter, executed twice with two values.
    let mut prepared = client
        .prepare(
            "SELECT ip, memtotal FROM sys WHERE memtotal > $1 ORDER BY ip".to_string(),
            None,
        )
        .await
        .unwrap();
    let parameters = prepared.parameter_schema().unwrap().clone();
    assert_eq!(parameters.fields().len(), 1, "{parameters:?}");
    let dataset: Vec<String> = prepared
        .dataset_schema()
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(dataset, ["ip", "memtotal"]);
    let bind = |value: i64| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
                "$1",
                arrow::datatypes::DataType::Int64,
                true,
            )])),
            vec![Arc::new(Int64Array::from(vec![value]))],
        )
        .unwrap()
    };
    prepared.set_parameters(bind(0)).unwrap();
    let info = prepared.execute().await.unwrap();
    assert!(info_generation(&info)["id"].as_u64().unwrap() > 0);
    let (all, _) = read(&mut client, &info).await;
    assert_eq!(rows(&all) as i64, machines);
    prepared.set_parameters(bind(i64::MAX)).unwrap();
    let info = prepared.execute().await.unwrap();
    let (none, _) = read(&mut client, &info).await;
    assert_eq!(rows(&none), 0, "the second value was bound");
    prepared.close().await.unwrap();

    // A write is refused with the node's read-only message, both ways.
    let refused = client
        .execute("DROP TABLE sys".to_string(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("fleetsql is read-only"), "{refused}");
    let refused = client
        .execute_update("INSERT INTO sys VALUES (1)".to_string(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("fleetsql is read-only"), "{refused}");

    // GetTables with schemas: fleet tables with their columns.
    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("sys".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let (batches, _) = read(&mut client, &info).await;
    assert_eq!(rows(&batches), 1);
    let batch = &batches[0];
    let table = batch
        .column_by_name("table_name")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(table.value(0), "sys");
    let kind = batch
        .column_by_name("table_type")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(kind.value(0), "TABLE");
    let ipc = batch
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>();
    let columns = Schema::try_from(arrow_flight::IpcMessage(ipc.value(0).to_vec().into())).unwrap();
    for column in ["ip", "memtotal", "_cluster"] {
        assert!(
            columns.field_with_name(column).is_ok(),
            "no {column} in {columns:?}"
        );
    }

    // Every table, no schemas: fleet and system tables.
    let info = client
        .get_tables(CommandGetTables {
            include_schema: false,
            ..CommandGetTables::default()
        })
        .await
        .unwrap();
    let (batches, _) = read(&mut client, &info).await;
    let mut listed = Vec::new();
    for batch in &batches {
        let names = batch
            .column_by_name("table_name")
            .unwrap()
            .as_string::<i32>();
        listed.extend((0..names.len()).map(|i| names.value(i).to_string()));
    }
    for table in ["sys", "machinerole", "fleet_nodes"] {
        assert!(
            listed.iter().any(|t| t == table),
            "no {table} in {listed:?}"
        );
    }

    // Catalogs, schemas, table types.
    let info = client.get_catalogs().await.unwrap();
    let (batches, _) = read(&mut client, &info).await;
    assert_eq!(
        batches[0].column(0).as_string::<i32>().value(0),
        "datafusion"
    );
    let info = client.get_db_schemas(Default::default()).await.unwrap();
    let (batches, _) = read(&mut client, &info).await;
    let schemas = batches[0].column(1).as_string::<i32>();
    assert!((0..schemas.len()).any(|i| schemas.value(i) == "public"));
    let info = client.get_table_types().await.unwrap();
    let (batches, _) = read(&mut client, &info).await;
    assert!(rows(&batches) >= 1);

    // SQL info: fleetsql's name and version, read-only.
    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerVersion,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let (batches, _) = read(&mut client, &info).await;
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(text.contains("fleetsql"), "{text}");
    assert!(text.contains("DataFusion"), "{text}");
    assert!(text.contains("true"), "read-only: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_flight_sql_driver_reads_arrow() {
    let Some(python) = std::env::var_os("FLEETSQL_BENCH_PYTHON") else {
        // CI always runs through scripts/test, which provides it.
        assert!(
            std::env::var_os("CI").is_none(),
            "FLEETSQL_BENCH_PYTHON is unset; run ./scripts/test"
        );
        eprintln!("skipped: FLEETSQL_BENCH_PYTHON is unset (./scripts/test sets it)");
        return;
    };
    let demo = TestDemo::start().await;
    let script = crate::fixture::repo_root().join("tests/clients/adbc_flightsql.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("grpc://{}", demo.flightsql))
        .output()
        .await
        .expect("the Python of scripts/python-env runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ADBC failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "ok   adbc count",
        "ok   adbc parameter",
        "ok   adbc SELECT * join",
        "ok   adbc write refused",
        "ok   adbc get_objects",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}
