//! A request whose handler panics is answered 500 with `{error, hint}` and
//! logged; the server keeps answering (issue 17 item 7).

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use fleetsql_http::HttpServer;

async fn boom() -> &'static str {
    panic!("a bug in one handler")
}

#[tokio::test]
async fn a_panicking_handler_answers_500_json_and_the_server_keeps_answering() {
    let app = Router::new()
        .route("/boom", get(boom))
        .route("/ok", get(|| async { "ok" }));
    let server = HttpServer::start(app, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client.get(format!("{base}/boom")).send().await.unwrap();
        assert_eq!(r.status(), 500);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("internal error"),
            "{body}"
        );
        assert!(
            body["hint"].as_str().unwrap().contains("still running"),
            "{body}"
        );
        let r = client.get(format!("{base}/ok")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    server.shutdown().await;
}
