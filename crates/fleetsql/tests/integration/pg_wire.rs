//! The Postgres wire's limits and bulk paths against the real binary:
//! `COPY ... TO STDOUT` and psql's `\copy`, a session's own
//! `statement_timeout` (on time for a CPU-bound join), answers streamed
//! batch by batch, the concurrency limit's queue and refusal.

use std::process::{Command, Output};

use crate::cluster::TestDemo;

/// `psql` (unaligned, tuples only, no psqlrc, stop at the first error)
/// running each of `commands` against `demo`.
fn psql(demo: &TestDemo, commands: &[&str]) -> Output {
    let mut command = Command::new("psql");
    command
        .args(["-h", &demo.pg.ip().to_string()])
        .args(["-p", &demo.pg.port().to_string()])
        .args(["-U", "fleetsql", "-d", "fleetsql", "-X", "-A", "-t"])
        .args(["-v", "ON_ERROR_STOP=1"])
        .env("PGCONNECT_TIMEOUT", "10");
    for c in commands {
        command.args(["-c", c]);
    }
    command
        .output()
        .expect("psql is installed (scripts/apt lists it)")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_and_psql_copy_write_the_answer_and_copy_from_is_refused() {
    let demo = TestDemo::start().await;

    // psql's \copy runs COPY ... TO STDOUT and writes the file itself.
    let file = demo.dir.path().join("hosts.csv");
    let out = psql(
        &demo,
        &[&format!(
            "\\copy (SELECT hostname, ip FROM sys ORDER BY hostname) TO '{}' WITH CSV HEADER",
            file.display()
        )],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let machines = text(&psql(&demo, &["SELECT count(*) FROM sys"]).stdout)
        .trim()
        .to_string();
    assert!(
        text(&out.stdout).contains(&format!("COPY {machines}")),
        "{machines} machines: {}",
        text(&out.stdout)
    );
    // The completeness NOTICE comes with it, as with any fleet query.
    assert!(
        text(&out.stderr).contains("NOTICE"),
        "{}",
        text(&out.stderr)
    );
    let rows = psql(
        &demo,
        &["SELECT hostname || ',' || ip FROM sys ORDER BY hostname"],
    );
    assert!(rows.status.success(), "{}", text(&rows.stderr));
    let copied = std::fs::read_to_string(&file).unwrap();
    assert_eq!(copied, format!("hostname,ip\n{}", text(&rows.stdout)));

    // Text and CSV as Postgres writes them: NULL, the empty string, and
    // values holding the delimiter, a quote, a tab or a newline.
    let values = "SELECT 'a,b' AS x, NULL AS y, '' AS z, 'say \"hi\"' AS q, 'tab' || chr(9) || 'new' || chr(10) || 'line' AS t, 42 AS n, true AS b";
    let out = psql(
        &demo,
        &[&format!(
            "COPY ({values}) TO STDOUT WITH (FORMAT csv, HEADER)"
        )],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "x,y,z,q,t,n,b\n\"a,b\",,\"\",\"say \"\"hi\"\"\",\"tab\tnew\nline\",42,t\n"
    );
    let out = psql(&demo, &[&format!("COPY ({values}) TO STDOUT")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "a,b\t\\N\t\tsay \"hi\"\ttab\\tnew\\nline\t42\tt\n"
    );
    // A table by name, with a column list.
    let out = psql(&demo, &["COPY machinerole (ip) TO STDOUT"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count().to_string(),
        machines,
        "{}",
        text(&out.stdout)
    );

    // Nothing is written on the node and nothing read from the client.
    for (copy, code, words) in [
        ("COPY sys FROM STDIN", "25006", "read-only"),
        (
            "COPY sys FROM '/tmp/fleetsql-copy-from'",
            "25006",
            "read-only",
        ),
        (
            "COPY (SELECT 1) TO '/tmp/fleetsql-copy-to'",
            "42501",
            "\\copy",
        ),
        (
            "COPY (SELECT 1) TO STDOUT (FORMAT binary)",
            "0A000",
            "FORMAT text or FORMAT csv",
        ),
    ] {
        let out = psql(&demo, &["\\set VERBOSITY verbose", copy]);
        let err = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{copy} answered: {}",
            text(&out.stdout)
        );
        assert!(err.contains(code) && err.contains(words), "{copy}: {err}");
    }
    assert!(!std::path::Path::new("/tmp/fleetsql-copy-to").exists());
    // The connection goes on after a refusal.
    let out = Command::new("psql")
        .args(["-h", &demo.pg.ip().to_string()])
        .args(["-p", &demo.pg.port().to_string()])
        .args(["-U", "fleetsql", "-X", "-A", "-t"])
        .args(["-c", "COPY sys FROM STDIN", "-c", "SELECT 7"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "7", "{}", text(&out.stderr));
}

/// A query that never finishes on the demo fleet: a five-way cross join
/// of `processes` (60 rows: ~8e8 combinations) with a filter to evaluate.
const ENDLESS: &str = "SELECT count(*) FROM processes a, processes b, processes c, processes d, processes e WHERE a.pid + b.pid + c.pid + d.pid + e.pid = -1";

async fn connect(demo: &TestDemo) -> tokio_postgres::Client {
    let url = format!(
        "host={} port={} user=fleetsql",
        demo.pg.ip(),
        demo.pg.port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The SQLSTATE and message of a failed statement.
fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_statement_timeout_lowers_only_its_own_time_out() {
    let demo = TestDemo::start_with(2, 3, "1s", &["--query-timeout".into(), "2s".into()]).await;
    let a = connect(&demo).await;
    let b = connect(&demo).await;
    a.batch_execute("SET statement_timeout = '100ms'")
        .await
        .unwrap();
    let shown = a.simple_query("SHOW statement_timeout").await.unwrap();
    let shown: Vec<String> = shown
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(shown, ["100ms"]);

    // Simple protocol, then extended: the session's 100 ms stops it.
    let started = std::time::Instant::now();
    let e = a.simple_query(ENDLESS).await.unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("statement_timeout is 100 ms"), "{message}");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    let e = a.query(ENDLESS, &[]).await.unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("statement_timeout is 100 ms"), "{message}");
    // The session goes on.
    let rows = a.query("SELECT count(*) FROM sys", &[]).await.unwrap();
    assert!(rows[0].get::<_, i64>(0) > 0);

    // Another session keeps the node's 2 s: the same query runs until it.
    let started = std::time::Instant::now();
    let e = b.simple_query(ENDLESS).await.unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("time-out of 2000 ms"), "{message}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let e = b.query(ENDLESS, &[]).await.unwrap_err();
    assert!(db_error(&e).1.contains("time-out of 2000 ms"), "{e}");

    // A session cannot raise its time-out above the node's.
    a.batch_execute("SET statement_timeout = '1h'")
        .await
        .unwrap();
    let e = a.simple_query(ENDLESS).await.unwrap_err();
    assert!(db_error(&e).1.contains("time-out of 2000 ms"), "{e}");
    // Back to the node's with 0; a value it cannot read is refused.
    a.batch_execute("SET statement_timeout = 0").await.unwrap();
    let e = a
        .batch_execute("SET statement_timeout = 'soon'")
        .await
        .unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, "22023", "{message}");
    assert!(message.contains("'500ms'"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_limit_gets_53200_with_a_hint_and_the_node_goes_on() {
    let demo = TestDemo::start_with(2, 3, "1s", &["--query-memory-mib".into(), "1".into()]).await;
    let client = connect(&demo).await;
    // 216,000 groups: several MiB of hash table, over the node's 1 MiB.
    let hungry = "SELECT a.pid, b.pid, c.pid, count(*) FROM processes a, processes b, processes c GROUP BY 1, 2, 3";
    for extended in [false, true] {
        let e = if extended {
            client.query(hungry, &[]).await.map(|_| ()).unwrap_err()
        } else {
            client.simple_query(hungry).await.map(|_| ()).unwrap_err()
        };
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("not a server error: {e}"));
        assert_eq!(
            db.code().code(),
            "53200",
            "extended={extended}: {}",
            db.message()
        );
        assert!(db.message().contains("more memory"), "{}", db.message());
        let hint = db.hint().unwrap_or_default();
        assert!(
            hint.contains("query_memory_mib"),
            "extended={extended}: {hint:?}"
        );
        // The node is up and the next query answers.
        let rows = client.query("SELECT count(*) FROM sys", &[]).await.unwrap();
        assert!(rows[0].get::<_, i64>(0) > 0);
    }
}

/// The rows of a five-way cross join of `processes`: about a billion, more than any
/// time-out lets the node send.
const ENDLESS_ROWS: &str =
    "SELECT a.pid FROM processes a, processes b, processes c, processes d, processes e";

/// What a test waits at most for an answer the node's 3 s time-out ends:
/// a node that never ends it fails the test instead of hanging it.
const ANSWER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads an answer's rows until its error: how many rows came first, and
/// the error. Panics if the answer ends without one (an endless query
/// cannot) or is still going after [`ANSWER_DEADLINE`].
async fn rows_until_error<S, T>(stream: S) -> (u64, tokio_postgres::Error)
where
    S: futures::Stream<Item = Result<T, tokio_postgres::Error>>,
{
    futures::pin_mut!(stream);
    let mut rows = 0u64;
    let read = async {
        loop {
            match futures::StreamExt::next(&mut stream).await {
                Some(Ok(_)) => rows += 1,
                Some(Err(e)) => return e,
                None => panic!("an endless answer ended after {rows} rows without an error"),
            }
        }
    };
    let error = tokio::time::timeout(ANSWER_DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("the endless answer did not end within {ANSWER_DEADLINE:?}"));
    (rows, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_streams_rows_before_the_query_ends_on_both_protocols() {
    let demo = TestDemo::start_with(2, 3, "1s", &["--query-timeout".into(), "3s".into()]).await;
    let client = connect(&demo).await;
    // Simple protocol: rows arrive, then the node's time-out ends them. An
    // answer collected before sending would be the error alone.
    let messages = client.simple_query_raw(ENDLESS_ROWS).await.unwrap();
    let messages = futures::StreamExt::filter(messages, |m| {
        std::future::ready(!matches!(
            m,
            Ok(tokio_postgres::SimpleQueryMessage::RowDescription(_))
        ))
    });
    let (rows, end) = rows_until_error(messages).await;
    assert!(rows > 0, "no row before the end: {end}");
    let (code, message) = db_error(&end);
    assert_eq!(code, "57014", "{message}");
    // Extended protocol (what drivers send): the same, where the protocol
    // layer's portal used to collect every row before sending the first.
    let stream = client
        .query_raw(ENDLESS_ROWS, std::iter::empty::<i32>())
        .await
        .unwrap();
    let (rows, end) = rows_until_error(stream).await;
    assert!(rows > 0, "no row before the end: {end}");
    assert_eq!(db_error(&end).0, "57014", "{end}");
    // The session goes on.
    let rows = client.query("SELECT count(*) FROM sys", &[]).await.unwrap();
    assert!(rows[0].get::<_, i64>(0) > 0);
}

/// The node's `/health` count of queries running and waiting.
async fn query_load(demo: &TestDemo) -> (u64, u64) {
    let health: serde_json::Value = reqwest::get(format!("{}/health", demo.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queries = &health["queries"];
    (
        queries["running"].as_u64().unwrap_or(0),
        queries["queued"].as_u64().unwrap_or(0),
    )
}

/// Polls the node until `load` queries run and wait, for at most 30 s.
async fn until_load(demo: &TestDemo, load: (u64, u64)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = query_load(demo).await;
        if now == load {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node never had {load:?} (running, queued): {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_beyond_the_running_and_the_queued_is_refused_on_every_front_end() {
    let demo = TestDemo::start_with(
        2,
        3,
        "1s",
        &[
            "--query-timeout".into(),
            "4s".into(),
            "--max-concurrent-queries".into(),
            "1".into(),
            "--max-queued-queries".into(),
            "1".into(),
        ],
    )
    .await;
    let a = connect(&demo).await;
    let b = connect(&demo).await;
    let c = connect(&demo).await;
    // One runs (simple protocol), one waits (extended: its protocol layer
    // runs the plan, and still takes a place first).
    let running = tokio::spawn(async move { a.simple_query(ENDLESS).await.map(|_| ()) });
    until_load(&demo, (1, 0)).await;
    let waiting = tokio::spawn(async move {
        b.query(&format!("{ENDLESS} AND a.pid > 0"), &[])
            .await
            .map(|_| ())
    });
    until_load(&demo, (1, 1)).await;
    // A third is refused at once over pg and HTTP.
    let e = c
        .simple_query("SELECT count(*) FROM sys")
        .await
        .unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, "53300", "{message}");
    assert!(message.contains("max_queued_queries"), "{message}");
    let e = c.query("SELECT count(*) FROM sys", &[]).await.unwrap_err();
    assert_eq!(db_error(&e).0, "53300", "{e}");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/query", demo.url()))
        .json(&serde_json::json!({ "sql": "SELECT count(*) FROM sys" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["sqlstate"], "53300", "{body}");
    // Both end (the time-out, or the wait's), and the node answers again.
    running.await.unwrap().unwrap_err();
    waiting.await.unwrap().unwrap_err();
    until_load(&demo, (0, 0)).await;
    let rows = c.query("SELECT count(*) FROM sys", &[]).await.unwrap();
    assert!(rows[0].get::<_, i64>(0) > 0);
    let (status, _) = demo.query_json("SELECT count(*) FROM sys").await;
    assert_eq!(status, reqwest::StatusCode::OK);
}

/// Reads an HTTP answer chunk by chunk until its end or a cut, within
/// [`ANSWER_DEADLINE`]: the chunks that came, the last bytes, and whether
/// the body was cut (an error before its end).
async fn read_http_answer(mut response: reqwest::Response) -> (usize, Vec<u8>, bool) {
    let read = async {
        let mut chunks = 0usize;
        let mut tail = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    chunks += 1;
                    tail.extend_from_slice(&chunk);
                    // Only the end matters; an endless answer is large.
                    if tail.len() > 8192 {
                        tail.drain(..tail.len() - 8192);
                    }
                }
                Ok(None) => return (chunks, tail, false),
                Err(_) => return (chunks, tail, true),
            }
        }
    };
    tokio::time::timeout(ANSWER_DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("the endless answer did not end within {ANSWER_DEADLINE:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_flight_sql_answers_stream_before_the_query_ends() {
    let demo = TestDemo::start_with(2, 3, "1s", &["--query-timeout".into(), "3s".into()]).await;
    let http = reqwest::Client::new();
    let post = |accept: &'static str| {
        http.post(format!("{}/v1/query", demo.url()))
            .header(reqwest::header::ACCEPT, accept)
            .json(&serde_json::json!({ "sql": ENDLESS_ROWS }))
            .send()
    };
    // JSON: the rows are sent as computed (status 200 with the first), and
    // the time-out that ends them is the answer's trailing error. An answer
    // collected first would be a 504 and the error alone.
    let response = post("application/json").await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let (chunks, tail, cut) = read_http_answer(response).await;
    assert!(!cut, "a JSON answer ends with its error, not a cut");
    assert!(chunks > 2, "rows came in {chunks} chunks");
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.contains("\"sqlstate\":\"57014\""), "{tail}");
    assert!(tail.contains("\"error\":"), "{tail}");
    assert!(tail.trim_end().ends_with('}'), "{tail}");
    // A short answer is still one JSON object with its rows.
    let (status, body) = demo.query_json("SELECT count(*) FROM sys").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(body["rows"][0][0].as_i64().unwrap() > 0, "{body}");
    assert_eq!(body["row_count"], 1, "{body}");
    // Arrow IPC: batches as computed, then the stream is cut (no
    // end-of-stream marker), so no reader takes it as complete.
    let response = post(fleetsql_http::ARROW_STREAM).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let (chunks, _, cut) = read_http_answer(response).await;
    assert!(chunks > 1, "batches came in {chunks} chunks");
    assert!(cut, "an Arrow answer that failed must not end cleanly");

    // Flight SQL DoGet: record batches as computed, then the time-out's
    // status.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", demo.flightsql))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    let info = flight
        .execute(ENDLESS_ROWS.to_string(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut data = flight.do_get(ticket).await.unwrap().into_inner();
    let read = async {
        let mut batches = 0usize;
        loop {
            match futures::TryStreamExt::try_next(&mut data).await {
                Ok(Some(d)) => {
                    if let arrow_flight::decode::DecodedPayload::RecordBatch(_) = d.payload {
                        batches += 1;
                    }
                }
                Ok(None) => panic!("an endless answer ended after {batches} batches"),
                Err(e) => return (batches, e),
            }
        }
    };
    let (batches, error) = tokio::time::timeout(ANSWER_DEADLINE, read)
        .await
        .expect("the endless DoGet ended within the deadline");
    assert!(batches > 0, "no batch before the end: {error}");
    let arrow_flight::error::FlightError::Tonic(status) = error else {
        panic!("not a status: {error}");
    };
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_answer_frees_its_place_on_every_front_end() {
    // One query at a time, and a time-out far beyond the test's waits: only
    // the client's leaving can free the place in time.
    let demo = TestDemo::start_with(
        2,
        3,
        "1s",
        &[
            "--query-timeout".into(),
            "300s".into(),
            "--max-concurrent-queries".into(),
            "1".into(),
        ],
    )
    .await;
    until_load(&demo, (0, 0)).await;
    // HTTP: the first rows read, then the connection dropped.
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/query", demo.url()))
        .json(&serde_json::json!({ "sql": ENDLESS_ROWS }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.chunk().await.unwrap().expect("a first chunk");
    assert_eq!(query_load(&demo).await.0, 1);
    drop(response);
    until_load(&demo, (0, 0)).await;
    // pg (extended protocol): a row read, then the connection dropped.
    let url = format!(
        "host={} port={} user=fleetsql",
        demo.pg.ip(),
        demo.pg.port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let rows = client
        .query_raw(ENDLESS_ROWS, std::iter::empty::<i32>())
        .await
        .unwrap();
    futures::pin_mut!(rows);
    futures::StreamExt::next(&mut rows)
        .await
        .expect("a first row")
        .unwrap();
    assert_eq!(query_load(&demo).await.0, 1);
    connection.abort();
    until_load(&demo, (0, 0)).await;
    // Flight SQL: a batch read, then the call dropped.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", demo.flightsql))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    let info = flight
        .execute(ENDLESS_ROWS.to_string(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut data = flight.do_get(ticket).await.unwrap().into_inner();
    futures::TryStreamExt::try_next(&mut data)
        .await
        .unwrap()
        .expect("a first message");
    assert_eq!(query_load(&demo).await.0, 1);
    drop(data);
    drop(flight);
    until_load(&demo, (0, 0)).await;
    // The next query is admitted and answered.
    let (status, body) = demo.query_json("SELECT count(*) FROM sys").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_a_streaming_answer_on_both_protocols() {
    // A time-out far beyond the test's deadline: only the cancel can end
    // the answers in time.
    let demo = TestDemo::start_with(2, 3, "1s", &["--query-timeout".into(), "300s".into()]).await;
    let client = connect(&demo).await;
    let cancel = client.cancel_token();
    // Simple protocol: cancelled once its rows flow.
    let messages = client.simple_query_raw(ENDLESS_ROWS).await.unwrap();
    futures::pin_mut!(messages);
    let first_row = async {
        loop {
            match futures::StreamExt::next(&mut messages).await {
                Some(Ok(tokio_postgres::SimpleQueryMessage::Row(_))) => break,
                Some(Ok(_)) => {}
                other => panic!("no first row: {other:?}"),
            }
        }
    };
    tokio::time::timeout(ANSWER_DEADLINE, first_row)
        .await
        .expect("a first row within the deadline");
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (_, end) = rows_until_error(messages.as_mut()).await;
    let (code, message) = db_error(&end);
    assert_eq!(code, "57014", "{message}");
    // Extended protocol: the same.
    let rows = client
        .query_raw(ENDLESS_ROWS, std::iter::empty::<i32>())
        .await
        .unwrap();
    futures::pin_mut!(rows);
    tokio::time::timeout(ANSWER_DEADLINE, futures::StreamExt::next(&mut rows))
        .await
        .expect("a first row within the deadline")
        .expect("a first row")
        .unwrap();
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (_, end) = rows_until_error(rows.as_mut()).await;
    assert_eq!(db_error(&end).0, "57014", "{end}");
    // Both stopped (their places are free) and the session answers.
    until_load(&demo, (0, 0)).await;
    let rows = client.query("SELECT count(*) FROM sys", &[]).await.unwrap();
    assert!(rows[0].get::<_, i64>(0) > 0);
}

/// The `fleet_audit` rows of HTTP queries whose text is `sql`: outcome,
/// error and rows sent.
async fn http_audit_of(demo: &TestDemo, sql: &str) -> Vec<(String, String, Option<i64>)> {
    let (status, body) = demo
        .query_json(&format!(
            "SELECT outcome, coalesce(error, ''), rows FROM fleet_audit WHERE front_end = 'http' AND text = '{}'",
            sql.replace('\'', "''")
        ))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                r[1].as_str().unwrap().to_string(),
                r[2].as_i64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_http_answer_is_audited_when_it_ends() {
    let demo = TestDemo::start_with(2, 3, "1s", &["--query-timeout".into(), "3s".into()]).await;
    let http = reqwest::Client::new();
    let post = |sql: String, accept: &'static str| {
        http.post(format!("{}/v1/query", demo.url()))
            .header(reqwest::header::ACCEPT, accept)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
    };
    // JSON: 200 with the first rows, then the time-out's error.
    let json_sql = format!("{ENDLESS_ROWS} WHERE a.pid >= 0");
    let response = post(json_sql.clone(), "application/json").await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let (_, tail, _) = read_http_answer(response).await;
    assert!(String::from_utf8_lossy(&tail).contains("57014"));
    // Arrow: 200 with the first batches, then cut.
    let arrow_sql = format!("{ENDLESS_ROWS} WHERE a.pid >= 1");
    let response = post(arrow_sql.clone(), fleetsql_http::ARROW_STREAM)
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let (_, _, cut) = read_http_answer(response).await;
    assert!(cut);
    // A whole answer.
    let whole_sql = "SELECT hostname FROM sys".to_string();
    let (status, body) = demo.query_json(&whole_sql).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let sent = body["row_count"].as_i64().unwrap();
    assert!(sent > 0, "{body}");
    // Each is audited as it ended, not as its status said.
    for sql in [&json_sql, &arrow_sql] {
        let entries = http_audit_of(&demo, sql).await;
        assert_eq!(entries.len(), 1, "{sql}: {entries:?}");
        let (outcome, error, rows) = &entries[0];
        assert_eq!(outcome, "error", "{sql}: {entries:?}");
        assert!(error.starts_with("57014"), "{sql}: {entries:?}");
        assert!(rows.is_some_and(|r| r > 0), "{sql}: {entries:?}");
    }
    let entries = http_audit_of(&demo, &whole_sql).await;
    assert_eq!(entries, vec![("ok".to_string(), String::new(), Some(sent))]);
}
