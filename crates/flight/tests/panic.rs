//! A source that panics while a parent fetches (a bug) fails that call with
//! an internal error; the server goes on serving the next (issue 17 item 7).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fleetsql_aggregator::{Child, FetchRequest};
use fleetsql_flight::{FlightChild, FlightChildOptions, FlightServer};
use fleetsql_model::{Generation, now_ms};

/// Panics on every other fetch.
#[derive(Debug, Default)]
struct Flaky {
    calls: AtomicUsize,
}

#[async_trait]
impl Child for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn fetch(&self, _request: &FetchRequest) -> fleetsql_aggregator::Result<Arc<Generation>> {
        if self.calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            panic!("a bug in the source");
        }
        let mut g = Generation::empty("flaky");
        g.meta.id = 1;
        g.meta.made_at_ms = now_ms();
        Ok(Arc::new(g))
    }
}

#[tokio::test]
async fn a_panicking_source_fails_the_call_and_the_server_serves_on() {
    let server = FlightServer::start(Arc::new(Flaky::default()), "127.0.0.1:0".parse().unwrap())
        .expect("server starts");
    let child = FlightChild::new(
        "flaky",
        format!("http://{}", server.local_addr()),
        FlightChildOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .expect("endpoint");
    let request = FetchRequest {
        requester: "tla".into(),
        ..Default::default()
    };
    for _ in 0..3 {
        let error = child
            .fetch(&request)
            .await
            .expect_err("the panicking call fails");
        let text = error.to_string();
        assert!(text.contains("internal error"), "{text}");
        assert!(text.contains("still serving"), "{text}");
        let g = child
            .fetch(&request)
            .await
            .expect("the next call is answered");
        assert_eq!(g.meta.id, 1);
    }
    server.shutdown().await;
}
