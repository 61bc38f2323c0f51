//! Loopback tests: aggregators on both ends of a Flight link.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use async_trait::async_trait;
use fleetsql_aggregator::{
    Aggregator, AggregatorConfig, AggregatorError, Child, ChildGroup, FetchRequest,
};
use fleetsql_flight::{
    FetchTicket, FlightChild, FlightChildOptions, FlightError, FlightServer, FlightServerConfig,
    render_prometheus,
};
use fleetsql_model::{ClusterVisibility, Generation, Table, TableVisibility, now_ms};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tonic::{Request, Response, Status, Streaming};

const HOUR: Duration = Duration::from_secs(3600);

/// A machine publishing `sys` (one row) and `processes` (three rows).
#[derive(Debug)]
struct Machine {
    name: String,
    cluster: String,
}

#[async_trait]
impl Child for Machine {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, request: &FetchRequest) -> fleetsql_aggregator::Result<Arc<Generation>> {
        let now = now_ms();
        let mut g = Generation::empty(&self.name);
        g.meta.id = 1;
        g.meta.made_at_ms = now;
        g.meta.available = ["sys".to_string(), "processes".to_string()].into();
        g.meta.visibility.clusters.insert(
            self.cluster.clone(),
            ClusterVisibility {
                machines_expected: 1,
                machines_seen: 1,
                oldest_data_ms: Some(now),
                newest_data_ms: Some(now),
                via: String::new(),
            },
        );
        for name in &request.tables {
            let batch = match name.as_str() {
                "sys" => RecordBatch::try_from_iter([
                    (
                        "_host",
                        Arc::new(StringArray::from(vec![self.name.clone()])) as _,
                    ),
                    ("load", Arc::new(Float64Array::from(vec![0.5])) as _),
                ]),
                "processes" => RecordBatch::try_from_iter([
                    (
                        "_host",
                        Arc::new(StringArray::from(vec![self.name.clone(); 3])) as _,
                    ),
                    ("pid", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
                ]),
                _ => continue,
            }
            .expect("test batch");
            let rows = batch.num_rows() as u64;
            let table = Table::new(name, batch.schema(), vec![batch])?;
            g.tables.insert(name.clone(), Arc::new(table));
            g.meta.visibility.tables.insert(
                name.clone(),
                TableVisibility {
                    machines_with_rows: 1,
                    rows,
                    ..Default::default()
                },
            );
        }
        Ok(Arc::new(g))
    }
}

fn machine(name: &str, cluster: &str) -> ChildGroup {
    ChildGroup::single(Arc::new(Machine {
        name: name.into(),
        cluster: cluster.into(),
    }))
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("loopback address")
}

fn tables(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn options() -> FlightChildOptions {
    FlightChildOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// A proxy over two machines, served over Flight.
struct Served {
    proxy: Aggregator,
    server: FlightServer,
}

fn served_proxy() -> Served {
    let proxy = Aggregator::start(
        AggregatorConfig::new("proxy-c1", HOUR),
        vec![machine("m1", "c1"), machine("m2", "c1")],
    );
    let server = FlightServer::start(proxy.as_child(), loopback()).expect("server starts");
    Served { proxy, server }
}

fn flight_child(name: &str, addr: SocketAddr) -> Arc<FlightChild> {
    Arc::new(FlightChild::new(name, format!("http://{addr}"), options()).expect("endpoint"))
}

fn tla_over(children: Vec<Arc<dyn Child>>) -> Aggregator {
    Aggregator::start(
        AggregatorConfig::new("tla", HOUR),
        children.into_iter().map(ChildGroup::single).collect(),
    )
}

async fn ask(child: &Arc<dyn Child>, names: &[&str]) -> Arc<Generation> {
    child
        .fetch(&FetchRequest {
            requester: "sql".into(),
            tables: tables(names),
            ..Default::default()
        })
        .await
        .expect("fetch")
}

#[tokio::test]
async fn rows_and_visibility_arrive_through_flight() {
    let served = served_proxy();
    let remote = flight_child("proxy-c1", served.server.local_addr());
    let tla = tla_over(vec![remote.clone()]);

    let generation = ask(&tla.as_child(), &["sys"]).await;

    let sys = generation
        .table("sys")
        .expect("sys collected through Flight");
    assert_eq!(sys.num_rows(), 2);
    let v = &generation.meta.visibility;
    assert_eq!(v.machines_seen(), 2);
    assert_eq!(v.clusters["c1"].via, "proxy-c1");
    assert_eq!(v.tables["sys"].machines_with_rows, 2);
    assert!(v.children.iter().all(|c| c.merged));
    // Every tier also offers its own state as `fleet_nodes`.
    assert_eq!(
        generation.meta.available,
        tables(&["fleet_nodes", "processes", "sys"])
    );

    // The generation decoded by the client is the proxy's, metadata and all.
    let direct = remote
        .fetch_generation(&FetchRequest {
            requester: "tla".into(),
            tables: tables(&["sys"]),
            ..Default::default()
        })
        .await
        .expect("direct fetch");
    let proxy_now = served.proxy.current();
    // The server stamps when it handed the generation over (for the
    // receiver's clock); all else is the proxy's own.
    assert!(direct.meta.served_at_ms.is_some());
    let mut received = direct.meta.clone();
    received.served_at_ms = None;
    assert_eq!(received, proxy_now.meta);
    assert_eq!(
        direct.tables["sys"].batches(),
        proxy_now.tables["sys"].batches()
    );

    // Counters agree on both ends and render for /metrics.
    let sent = served.server.stats().snapshot();
    let received = remote.stats().snapshot();
    assert_eq!(sent.rows_sent("sys"), 4);
    assert_eq!(received.rows_received("sys"), 4);
    assert_eq!(sent.bytes_sent("sys"), received.bytes_received("sys"));
    let text = render_prometheus(&[(&[("peer", "proxy-c1")], &received)]);
    assert!(
        text.contains("fleetsql_flight_rows_received_total{peer=\"proxy-c1\",table=\"sys\"} 4\n")
    );
    served.server.shutdown().await;
}

#[tokio::test]
async fn long_poll_answers_once_a_newer_generation_exists() {
    let served = served_proxy();
    let remote = flight_child("proxy-c1", served.server.local_addr());
    let first = remote
        .fetch_generation(&FetchRequest {
            requester: "tla".into(),
            tables: tables(&["sys"]),
            ..Default::default()
        })
        .await
        .expect("first fetch");
    assert!(first.meta.id > 0);

    // Without a newer generation the call is held for the wait it asked for
    // and then answers with what there is.
    let held = remote
        .fetch_generation(&FetchRequest {
            requester: "tla".into(),
            tables: tables(&["sys"]),
            since_generation: Some(first.meta.id),
            wait: Some(Duration::from_millis(300)),
            meta_only: false,
        })
        .await
        .expect("held fetch");
    assert_eq!(held.meta.id, first.meta.id);

    // With a long wait, a new generation ends the poll well before it.
    let poll = {
        let remote = remote.clone();
        let since = first.meta.id;
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let g = remote
                .fetch_generation(&FetchRequest {
                    requester: "tla".into(),
                    tables: tables(&["sys"]),
                    since_generation: Some(since),
                    wait: Some(Duration::from_secs(30)),
                    meta_only: false,
                })
                .await;
            (g, started.elapsed())
        })
    };
    served.proxy.tick_now();
    let (newer, elapsed) = poll.await.expect("poll task");
    let newer = newer.expect("long poll");
    assert!(newer.meta.id > first.meta.id);
    assert_eq!(newer.tables["sys"].num_rows(), 2);
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    served.server.shutdown().await;
}

#[tokio::test]
async fn requested_tables_flow_down_and_others_stay_home() {
    let served = served_proxy();
    let remote = flight_child("proxy-c1", served.server.local_addr());
    let tla = tla_over(vec![remote.clone()]);
    let parent = tla.as_child();

    let generation = ask(&parent, &["sys"]).await;
    assert!(generation.table("processes").is_none());
    let sent = served.server.stats().snapshot();
    assert!(sent.rows_sent("sys") > 0);
    assert!(
        !sent.sent.contains_key("processes"),
        "unrequested table was sent: {sent:?}"
    );
    assert!(!remote.stats().snapshot().received.contains_key("processes"));
    // The proxy never collected it either: the request did not name it.
    assert!(served.proxy.current().table("processes").is_none());

    // A table first named at the top is collected below within the call.
    let generation = ask(&parent, &["sys", "processes"]).await;
    assert_eq!(
        generation.table("processes").expect("collected").num_rows(),
        6
    );
    assert!(served.server.stats().snapshot().rows_sent("processes") >= 6);
    assert!(remote.stats().snapshot().rows_received("processes") >= 6);
    served.server.shutdown().await;
}

#[tokio::test]
async fn a_restarted_server_on_the_same_port_is_used_again() {
    let served = served_proxy();
    let addr = served.server.local_addr();
    let remote = flight_child("proxy-c1", addr);
    let as_child: Arc<dyn Child> = remote.clone();
    assert_eq!(ask(&as_child, &["sys"]).await.tables["sys"].num_rows(), 2);

    served.server.shutdown().await;
    let err = as_child
        .fetch(&FetchRequest {
            requester: "sql".into(),
            tables: tables(&["sys"]),
            ..Default::default()
        })
        .await
        .expect_err("server is down");
    match &err {
        AggregatorError::Child { child, reason } => {
            assert_eq!(child, "proxy-c1");
            assert!(!reason.is_empty());
        }
        AggregatorError::Timeout { child, .. } => assert_eq!(child, "proxy-c1"),
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(remote.stats().snapshot().failures, 1);

    let restarted = FlightServer::start(served.proxy.as_child(), addr).expect("same port again");
    assert_eq!(restarted.local_addr(), addr);
    let generation = ask(&as_child, &["sys"]).await;
    assert_eq!(generation.tables["sys"].num_rows(), 2);
    let health = remote.health().await.expect("health");
    assert_eq!(health.producer, "proxy-c1");
    restarted.shutdown().await;
}

async fn raw_client(addr: SocketAddr) -> FlightServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    FlightServiceClient::new(channel)
}

/// Records what a real server sends for one ticket.
async fn record(addr: SocketAddr, names: &[&str]) -> Vec<FlightData> {
    let mut client = raw_client(addr).await;
    let ticket = FetchTicket {
        requester: "recorder".into(),
        tables: tables(names),
        ..Default::default()
    };
    let stream = client
        .do_get(Ticket {
            ticket: ticket.to_bytes(),
        })
        .await
        .expect("do_get")
        .into_inner();
    stream.map(|m| m.expect("message")).collect().await
}

/// A misbehaving child: answers every `DoGet` with a scripted stream.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<Vec<Result<FlightData, Status>>>>,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for Scripted {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;
    type DoExchangeStream = Boxed<FlightData>;

    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let script = self.script.lock().clone();
        Ok(Response::new(Box::pin(futures::stream::iter(script))))
    }
    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("test"))
    }
}

async fn start_scripted(service: Scripted) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(FlightServiceServer::new(service))
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, task)
}

#[tokio::test]
async fn corrupt_or_truncated_streams_are_rejected_without_poisoning_the_merge() {
    let good = served_proxy();
    let recorded = record(good.server.local_addr(), &["sys", "processes"]).await;
    // header, then per table: schema + one batch
    assert_eq!(recorded.len(), 5);

    let scripted = Scripted::default();
    let (bad_addr, bad_task) = start_scripted(scripted.clone()).await;
    let bad = flight_child("bad-proxy", bad_addr);
    let good_child = flight_child("proxy-c1", good.server.local_addr());

    let mut garbage_header = recorded.clone();
    garbage_header[0].app_metadata = bytes::Bytes::from_static(b"\x00\x01 not json");
    let mut garbage_ipc = recorded.clone();
    garbage_ipc[2].data_header = bytes::Bytes::from_static(b"garbage garbage garbage");
    let mut wrong_schema = recorded.clone();
    // `processes` batch announced under the `sys` schema.
    wrong_schema[2] = recorded[4].clone();
    let cases: Vec<(&str, Vec<Result<FlightData, Status>>)> = vec![
        ("empty stream", vec![]),
        (
            "no metadata message",
            recorded[1..].iter().cloned().map(Ok).collect(),
        ),
        (
            "garbage header",
            garbage_header.into_iter().map(Ok).collect(),
        ),
        ("garbage IPC", garbage_ipc.into_iter().map(Ok).collect()),
        (
            "batch of another schema",
            wrong_schema.into_iter().map(Ok).collect(),
        ),
        (
            "stops after a table",
            recorded[..3].iter().cloned().map(Ok).collect(),
        ),
        (
            "stops mid-table",
            recorded[..4].iter().cloned().map(Ok).collect(),
        ),
        (
            "aborts mid-stream",
            recorded[..3]
                .iter()
                .cloned()
                .map(Ok)
                .chain([Err(Status::internal("crashed"))])
                .collect(),
        ),
    ];
    let request = FetchRequest {
        requester: "tla".into(),
        tables: tables(&["sys", "processes"]),
        ..Default::default()
    };
    for (what, script) in cases {
        *scripted.script.lock() = script;
        let err = bad.fetch(&request).await.expect_err(what);
        assert!(
            matches!(err, AggregatorError::Child { ref child, .. } if child == "bad-proxy"),
            "{what}: {err}"
        );
    }
    let stats = bad.stats().snapshot();
    assert!(
        stats.received.is_empty(),
        "rejected streams counted: {stats:?}"
    );
    assert_eq!(stats.failures, 8);

    // The unmodified recording is accepted: the rejections above are the
    // corruption's doing, not the replay's.
    *scripted.script.lock() = recorded.iter().cloned().map(Ok).collect();
    let replayed = bad.fetch(&request).await.expect("faithful replay");
    assert_eq!(replayed.tables["processes"].num_rows(), 6);

    // In a merge, the bad child is left out and the good one still counts.
    *scripted.script.lock() = recorded[..4].iter().cloned().map(Ok).collect();
    let tla = tla_over(vec![good_child, bad]);
    let generation = ask(&tla.as_child(), &["sys"]).await;
    assert_eq!(generation.tables["sys"].num_rows(), 2);
    let status: Vec<(String, bool)> = generation
        .meta
        .visibility
        .children
        .iter()
        .map(|c| (c.name.clone(), c.merged))
        .collect();
    assert_eq!(
        status,
        vec![
            ("proxy-c1".to_string(), true),
            ("bad-proxy".to_string(), false)
        ]
    );
    assert!(generation.meta.visibility.children[1].error.is_some());
    bad_task.abort();
    good.server.shutdown().await;
}

#[tokio::test]
async fn unsupported_methods_say_so() {
    let served = served_proxy();
    let mut client = raw_client(served.server.local_addr()).await;
    let status = client
        .get_flight_info(FlightDescriptor::new_path(vec!["sys".into()]))
        .await
        .expect_err("unimplemented");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(status.message().contains("DoGet"));
    let status = client
        .do_get(Ticket {
            ticket: bytes::Bytes::from_static(b"not json"),
        })
        .await
        .expect_err("bad ticket");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    served.server.shutdown().await;
}

#[tokio::test]
async fn a_server_on_threads_of_its_own_serves_and_shuts_down() {
    let proxy = Aggregator::start(
        AggregatorConfig::new("proxy-c1", HOUR),
        vec![machine("m1", "c1"), machine("m2", "c1")],
    );
    let config = FlightServerConfig {
        own_threads: Some(1),
        ..FlightServerConfig::default()
    };
    let server =
        FlightServer::start_with(proxy.as_child(), loopback(), config.clone()).expect("starts");
    let remote: Arc<dyn Child> = flight_child("proxy-c1", server.local_addr());
    let generation = ask(&remote, &["processes"]).await;
    assert_eq!(
        generation.table("processes").expect("processes").num_rows(),
        6
    );

    // A taken port is an error, not a panic from dropping the runtime made
    // for the server inside this one.
    let taken = FlightServer::start_with(proxy.as_child(), server.local_addr(), config);
    assert!(matches!(taken, Err(FlightError::Bind { .. })), "{taken:?}");

    server.shutdown().await;
    assert!(
        remote
            .fetch(&FetchRequest {
                requester: "sql".into(),
                tables: tables(&["processes"]),
                ..Default::default()
            })
            .await
            .is_err(),
        "nothing answers after shutdown"
    );
}

/// A source whose `t` keeps its identity columns (the same arrays) from
/// one generation to the next while `value` changes; `rows` sets the size.
#[derive(Debug)]
struct Ticking {
    ids: Mutex<(usize, Arc<Int64Array>, Arc<StringArray>)>,
    generation: std::sync::atomic::AtomicU64,
}

impl Ticking {
    fn new(rows: usize) -> Ticking {
        Ticking {
            ids: Mutex::new(Ticking::identity(rows)),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn identity(rows: usize) -> (usize, Arc<Int64Array>, Arc<StringArray>) {
        let ids = Int64Array::from_iter_values(0..rows as i64);
        let names = StringArray::from_iter_values((0..rows).map(|i| format!("host-{i}")));
        (rows, Arc::new(ids), Arc::new(names))
    }

    /// Processes come and go: the rows no longer line up with the last ones.
    fn resize(&self, rows: usize) {
        *self.ids.lock() = Ticking::identity(rows);
    }
}

#[async_trait]
impl Child for Ticking {
    fn name(&self) -> &str {
        "ticking"
    }

    async fn fetch(&self, request: &FetchRequest) -> fleetsql_aggregator::Result<Arc<Generation>> {
        let id = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let (rows, ids, names) = self.ids.lock().clone();
        let mut g = Generation::empty("ticking");
        g.meta.id = id;
        g.meta.made_at_ms = now_ms();
        g.meta.available = ["t".to_string()].into();
        if request.meta_only || !request.tables.contains("t") {
            return Ok(Arc::new(g));
        }
        let values = Float64Array::from_iter_values((0..rows as u64).map(|i| value_at(i, id)));
        let batch = RecordBatch::try_from_iter([
            ("id", ids as _),
            ("host", names as _),
            ("value", Arc::new(values) as _),
        ])
        .expect("test batch");
        let table = Table::new("t", batch.schema(), vec![batch])?;
        g.tables.insert("t".into(), Arc::new(table));
        Ok(Arc::new(g))
    }
}

/// One row in ten moves each generation; the others keep their value.
fn value_at(row: u64, generation: u64) -> f64 {
    if row.is_multiple_of(10) {
        (row * generation) as f64
    } else {
        row as f64
    }
}

fn values_of(g: &Generation) -> Vec<f64> {
    let t = &g.tables["t"];
    t.batches()
        .iter()
        .flat_map(|b| {
            let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
            v.values().to_vec()
        })
        .collect()
}

#[tokio::test]
async fn later_generations_travel_as_the_rows_and_columns_that_changed() {
    let source = Arc::new(Ticking::new(20_000));
    let config = FlightServerConfig {
        compression: fleetsql_flight::Compression::None,
        ..FlightServerConfig::default()
    };
    let server = FlightServer::start_with(source.clone(), loopback(), config).expect("starts");
    let remote = flight_child("ticking", server.local_addr());
    let fetch = |remote: Arc<FlightChild>, meta_only: bool| async move {
        remote
            .fetch_generation(&FetchRequest {
                requester: "tla".into(),
                tables: tables(&["t"]),
                meta_only,
                ..Default::default()
            })
            .await
            .expect("fetch")
    };

    let first = fetch(remote.clone(), false).await;
    let full_bytes = remote.stats().snapshot().bytes_received("t");
    assert_eq!(server.stats().snapshot().diff_tables_sent, 0);

    // A probe in between neither moves the base nor gets rows.
    let probe = fetch(remote.clone(), true).await;
    assert!(probe.tables.is_empty());

    let second = fetch(remote.clone(), false).await;
    assert_eq!(second.meta.id, 3);
    let stats = remote.stats().snapshot();
    assert_eq!(stats.diff_tables_received, 1);
    assert_eq!(server.stats().snapshot().diff_tables_sent, 1);
    let diff_bytes = stats.bytes_received("t") - full_bytes;
    // Only the tenth of the rows whose `value` moved travelled (position
    // and value, 16 of the ~30 bytes a row holds).
    assert!(
        diff_bytes * 10 < full_bytes,
        "diff {diff_bytes} B vs full {full_bytes} B"
    );
    assert_eq!(stats.rows_received("t"), 40_000);
    // The rows are the source's, and the identity columns are the very
    // buffers the first generation brought.
    assert_eq!(
        values_of(&second),
        (0..20_000u64).map(|i| value_at(i, 3)).collect::<Vec<_>>()
    );
    let (old, new) = (&first.tables["t"], &second.tables["t"]);
    for column in [0, 1] {
        assert!(
            new.batches()[0]
                .column(column)
                .to_data()
                .ptr_eq(&old.batches()[0].column(column).to_data()),
            "column {column} shared"
        );
    }

    // A parent without that base (a new client) gets the whole table.
    let fresh = flight_child("ticking", server.local_addr());
    let whole = fetch(fresh.clone(), false).await;
    assert_eq!(fresh.stats().snapshot().diff_tables_received, 0);
    assert_eq!(values_of(&whole).len(), 20_000);

    // Rows that no longer line up (a different row count) go whole too,
    // and the diffs resume against that.
    source.resize(20_001);
    let resized = fetch(remote.clone(), false).await;
    assert_eq!(resized.tables["t"].num_rows(), 20_001);
    assert_eq!(remote.stats().snapshot().diff_tables_received, 1);
    let after = fetch(remote.clone(), false).await;
    assert_eq!(remote.stats().snapshot().diff_tables_received, 2);
    assert_eq!(
        values_of(&after),
        (0..20_001u64)
            .map(|i| value_at(i, after.meta.id))
            .collect::<Vec<_>>()
    );
    server.shutdown().await;
}

/// The `stream` part of an answer's first message.
async fn answer_layout(addr: SocketAddr, ticket: FetchTicket) -> serde_json::Value {
    let mut client = raw_client(addr).await;
    let mut stream = client
        .do_get(Ticket {
            ticket: ticket.to_bytes(),
        })
        .await
        .expect("do_get")
        .into_inner();
    let first = stream.next().await.expect("header").expect("header");
    let header: serde_json::Value = serde_json::from_slice(&first.app_metadata).expect("json");
    // Read to the end: the server counts an answer as held by the parent
    // (a base for diffs) only once it has handed over every message, and
    // the stream ends after that.
    while let Some(message) = stream.next().await {
        message.expect("message");
    }
    header["stream"].clone()
}

#[tokio::test]
async fn only_tables_the_parent_says_it_holds_are_diffs() {
    let source = Arc::new(Ticking::new(5_000));
    let server = FlightServer::start(source, loopback()).expect("starts");
    let addr = server.local_addr();
    let ticket = |base: Option<u64>, base_tables: &[&str]| FetchTicket {
        requester: "tla".into(),
        tables: tables(&["t"]),
        base_generation: base,
        accept_diff: base.is_some(),
        base_tables: tables(base_tables),
        ..Default::default()
    };
    let first = answer_layout(addr, ticket(None, &[])).await;
    assert_eq!(first["encoding"], "full");
    // Generation 1 went out with `t`. A parent that names it but not `t`
    // (it gave up on that call, say) gets `t` whole, not a diff it cannot
    // apply.
    let without = answer_layout(addr, ticket(Some(1), &[])).await;
    assert_eq!(without["encoding"], "full", "{without}");
    // Generation 2 went out whole too; naming it with `t` gets a diff.
    let with = answer_layout(addr, ticket(Some(2), &["t"])).await;
    assert_eq!(with["encoding"], "diff", "{with}");
    assert_eq!(with["base_generation"], 2);
    server.shutdown().await;
}

// ---- Upgrades: a parent and a child one minor version apart ----
//
// `tests/fixtures/v<version>/` holds what a release put on the wire: the
// ticket its parents send (`ticket.json`) and one answer of its children
// (`response.bin`: the `FlightData` messages of a `DoGet`, each as three
// length-prefixed fields, see `write_messages`). The current code must
// read every recorded release; record the current one with
// `FLEETSQL_RECORD_WIRE_FIXTURES=1` when a release is cut.

fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn write_messages(messages: &[FlightData]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        assert!(m.flight_descriptor.is_none(), "answers carry no descriptor");
        for field in [&m.data_header, &m.app_metadata, &m.data_body] {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field);
        }
    }
    out
}

/// One length-prefixed field off the front of `bytes`.
fn take_field(bytes: &mut &[u8]) -> bytes::Bytes {
    let (len, rest) = bytes.split_at(4);
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let (value, rest) = rest.split_at(len);
    *bytes = rest;
    bytes::Bytes::copy_from_slice(value)
}

fn read_messages(mut bytes: &[u8]) -> Vec<FlightData> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let data_header = take_field(&mut bytes);
        let app_metadata = take_field(&mut bytes);
        let data_body = take_field(&mut bytes);
        messages.push(FlightData {
            flight_descriptor: None,
            data_header,
            app_metadata,
            data_body,
        });
    }
    messages
}

/// Every recorded release, oldest first.
fn recorded_releases() -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("response.bin").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no recorded wire fixture");
    dirs
}

/// Writes this version's fixture (only when asked: it is what later
/// versions are tested against, so it changes only at a release).
#[tokio::test]
async fn record_wire_fixture_when_asked() {
    if std::env::var_os("FLEETSQL_RECORD_WIRE_FIXTURES").is_none() {
        return;
    }
    let dir = fixtures_dir().join(format!("v{}", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let served = served_proxy();
    let recorded = record(served.server.local_addr(), &["sys", "processes"]).await;
    std::fs::write(dir.join("response.bin"), write_messages(&recorded)).expect("write");
    let request = FetchRequest {
        requester: "tla".into(),
        tables: tables(&["sys", "processes"]),
        since_generation: Some(7),
        wait: Some(Duration::from_millis(500)),
        meta_only: false,
    };
    let mut base = Generation::empty("proxy-c1");
    base.meta.id = 7;
    let ticket = FetchTicket::from_request(&request, Some(&base));
    let json = serde_json::to_string_pretty(&ticket).expect("json");
    std::fs::write(dir.join("ticket.json"), json + "\n").expect("write");
    served.server.shutdown().await;
}

#[tokio::test]
async fn every_recorded_release_answer_is_decoded_by_this_version() {
    for dir in recorded_releases() {
        let bytes = std::fs::read(dir.join("response.bin")).expect("read fixture");
        let messages = read_messages(&bytes);
        let scripted = Scripted::default();
        *scripted.script.lock() = messages.into_iter().map(Ok).collect();
        let (addr, task) = start_scripted(scripted).await;
        let old_child = flight_child("proxy-c1", addr);
        let g = old_child
            .fetch_generation(&FetchRequest {
                requester: "tla".into(),
                tables: tables(&["sys", "processes"]),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        // The recorded answer: the proxy over m1 and m2 of cluster c1.
        assert_eq!(g.tables["sys"].num_rows(), 2, "{}", dir.display());
        assert_eq!(g.tables["processes"].num_rows(), 6, "{}", dir.display());
        let v = &g.meta.visibility;
        assert_eq!(v.machines_seen(), 2, "{}", dir.display());
        assert_eq!(v.clusters["c1"].machines_expected, 2, "{}", dir.display());
        let hosts: BTreeSet<String> = g.tables["sys"]
            .batches()
            .iter()
            .flat_map(|b| {
                let col = b.column_by_name("_host").expect("_host");
                let col = col.as_any().downcast_ref::<StringArray>().expect("utf8");
                col.iter().flatten().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(hosts, tables(&["m1", "m2"]), "{}", dir.display());
        task.abort();
    }
}

#[tokio::test]
async fn every_recorded_release_ticket_is_read_by_this_version() {
    for dir in recorded_releases() {
        let bytes = std::fs::read(dir.join("ticket.json")).expect("read ticket");
        let ticket =
            FetchTicket::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(ticket.requester, "tla", "{}", dir.display());
        assert_eq!(ticket.tables, tables(&["processes", "sys"]));
        let request = ticket.to_request(Duration::from_secs(2));
        assert_eq!(request.since_generation, Some(7));
        assert_eq!(request.wait, Some(Duration::from_millis(500)));
    }
    // A newer parent may send fields this version does not know yet.
    let newer = br#"{"requester":"tla","tables":["sys"],"redirect":"x","accept_diff":true,"some_later_field":{"a":1}}"#;
    let ticket = FetchTicket::from_bytes(newer).expect("unknown fields are ignored");
    assert!(ticket.accept_diff);
}

#[tokio::test]
async fn a_parent_from_before_diffs_gets_whole_tables() {
    // What a parent sent before diffs existed: no `accept_diff`,
    // `base_tables` or `meta_only`.
    let old = std::fs::read(fixtures_dir().join("ticket-before-diffs.json")).expect("fixture");
    let parsed = FetchTicket::from_bytes(&old).expect("old ticket parses");
    assert!(!parsed.accept_diff);
    let source = Arc::new(Ticking::new(5_000));
    let server = FlightServer::start(source, loopback()).expect("starts");
    let addr = server.local_addr();
    for round in 0..3u64 {
        // After the first answer, the ticket also names the generation
        // last sent and its table, as a diff-reading parent would: without
        // `accept_diff` that still gets whole tables.
        let ticket = if round == 0 {
            old.clone()
        } else {
            let mut t: serde_json::Value = serde_json::from_slice(&old).expect("json");
            t["base_generation"] = serde_json::json!(round);
            t["base_tables"] = serde_json::json!(["t"]);
            serde_json::to_vec(&t).expect("json")
        };
        let mut client = raw_client(addr).await;
        let mut stream = client
            .do_get(Ticket {
                ticket: bytes::Bytes::from(ticket),
            })
            .await
            .expect("do_get")
            .into_inner();
        let mut messages = Vec::new();
        while let Some(m) = stream.next().await {
            messages.push(m.expect("message"));
        }
        let header: serde_json::Value =
            serde_json::from_slice(&messages[0].app_metadata).expect("json");
        // The same requester has been sent generations before, which a
        // newer parent would get diffs against: this one never does.
        assert_eq!(header["stream"]["encoding"], "full", "round {round}");
        assert!(
            header["stream"]["tables"][0].get("changed").is_none(),
            "round {round}: {header}"
        );
        // Header, then `t`'s schema and batches: every row.
        let rows: u64 = header["stream"]["tables"][0]["rows"]
            .as_u64()
            .expect("rows");
        assert_eq!(rows, 5_000, "round {round}");
    }
    server.shutdown().await;
}
