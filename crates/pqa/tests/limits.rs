//! Issue 17 item 7 over a real socket: every limit of the persistent-query
//! API exercised just over it answers a clear 4xx (or XML-RPC fault) naming
//! the limit and its setting, and the next request is answered: the node is
//! still up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fleetsql_pqa::{Limits, PqaService, ServiceConfig, router};
use serde_json::{Value, json};

async fn serve(svc: PqaService) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(svc)).await.unwrap() });
    format!("http://{addr}")
}

fn with_limits(limits: Limits) -> PqaService {
    PqaService::new(ServiceConfig {
        limits,
        ..ServiceConfig::default()
    })
}

async fn register(c: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    let r = c
        .post(format!("{base}/v1/persistent-queries"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A 400 whose body names the setting; the message says the limit.
fn assert_limit(status: u16, body: &Value, setting: &str, max: usize) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["setting"], json!(setting), "{body}");
    assert_eq!(body["limit"], json!(max), "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(setting), "{error}");
    assert!(error.contains(&format!("limit of {max}")), "{error}");
    assert!(body["hint"].is_string(), "{body}");
}

/// The node still registers and lists queries.
async fn still_answers(c: &reqwest::Client, base: &str) {
    let (status, body) = register(c, base, json!({"epl": "select y from Alive"})).await;
    assert_eq!(status, 201, "{body}");
    let r = c
        .get(format!("{base}/v1/persistent-queries"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn limit_two_hundred_thousand_nested_parentheses_answer_400_and_the_node_stays_up() {
    let svc = PqaService::new(ServiceConfig::default());
    let base = serve(svc).await;
    let c = reqwest::Client::new();
    let epl = format!(
        "select {}x{} from S",
        "(".repeat(200_000),
        ")".repeat(200_000)
    );
    let (status, body) = register(&c, &base, json!({ "epl": epl })).await;
    assert_limit(
        status,
        &body,
        "limits.max_epl_depth",
        Limits::default().max_epl_depth,
    );
    still_answers(&c, &base).await;
}

#[tokio::test]
async fn limit_epl_depth_just_over_it_is_refused_and_at_it_accepted() {
    let svc = with_limits(Limits {
        max_epl_depth: 8,
        ..Limits::default()
    });
    let base = serve(svc).await;
    let c = reqwest::Client::new();
    // The select item is one level; seven parentheses make eight.
    let at = format!("select {}x{} from S", "(".repeat(7), ")".repeat(7));
    let (status, body) = register(&c, &base, json!({ "epl": at })).await;
    assert_eq!(status, 201, "{body}");
    let over = format!("select {}x{} from S", "(".repeat(8), ")".repeat(8));
    let (status, body) = register(&c, &base, json!({ "epl": over })).await;
    assert_limit(status, &body, "limits.max_epl_depth", 8);
    still_answers(&c, &base).await;
}

fn nested_xmlrpc(depth: usize) -> String {
    let open = "<value><array><data>".repeat(depth);
    let close = "</data></array></value>".repeat(depth);
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>pqa.list</methodName><params><param>{open}<value><string>x</string></value>{close}</param></params></methodCall>"
    )
}

async fn rpc(c: &reqwest::Client, base: &str, body: String) -> String {
    c.post(format!("{base}/RPC2"))
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn limit_xmlrpc_nesting_is_a_fault_naming_the_setting_and_the_node_stays_up() {
    let svc = PqaService::new(ServiceConfig::default());
    let base = serve(svc).await;
    let c = reqwest::Client::new();
    // 40,000 nested arrays (1.7 MB, under the body limit). The decoder
    // (dxr over quick-xml's serde reader) stops at 128 levels of its own,
    // with a message that names no setting; the scan refuses first, naming it.
    let r = rpc(&c, &base, nested_xmlrpc(40_000)).await;
    assert!(r.contains("<fault>"), "{}", &r[..r.len().min(400)]);
    assert!(r.contains("limits.max_xmlrpc_depth"), "{r}");
    assert!(r.contains("limit of 64"), "{r}");
    // methodCall, params, param: 3; each array level 3 more; the innermost
    // value and string 2: 19 levels are 62 deep, 20 levels 65.
    let r = rpc(&c, &base, nested_xmlrpc(19)).await;
    assert!(r.contains("<methodResponse><params>"), "{r}");
    let r = rpc(&c, &base, nested_xmlrpc(20)).await;
    assert!(r.contains("limits.max_xmlrpc_depth"), "{r}");
    let list = "<?xml version=\"1.0\"?><methodCall><methodName>pqa.list</methodName><params></params></methodCall>";
    let r = rpc(&c, &base, list.to_string()).await;
    assert!(
        r.contains("<methodResponse>") && !r.contains("<fault>"),
        "{r}"
    );
    still_answers(&c, &base).await;
}

#[tokio::test]
async fn limit_registrations_per_node() {
    let svc = with_limits(Limits {
        max_registrations: 2,
        ..Limits::default()
    });
    let base = serve(svc).await;
    let c = reqwest::Client::new();
    let (_, first) = register(&c, &base, json!({"epl": "select a from S"})).await;
    register(&c, &base, json!({"epl": "select b from S"})).await;
    // Another reference to an existing registration costs nothing.
    let (status, _) = register(&c, &base, json!({"epl": "select a from S"})).await;
    assert_eq!(status, 201);
    let (status, body) = register(&c, &base, json!({"epl": "select c from S"})).await;
    assert_limit(status, &body, "limits.max_registrations", 2);
    // Deleting makes room again.
    let id = first["id"].as_str().unwrap();
    for _ in 0..2 {
        c.delete(format!("{base}/v1/persistent-queries/{id}"))
            .send()
            .await
            .unwrap();
    }
    let (status, body) = register(&c, &base, json!({"epl": "select c from S"})).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn limit_subscribers_per_node() {
    let svc = with_limits(Limits {
        max_subscribers: 1,
        ..Limits::default()
    });
    let base = serve(svc.clone()).await;
    let c = reqwest::Client::new();
    let (_, reg) = register(&c, &base, json!({"epl": "select a from S"})).await;
    let id = reg["id"].as_str().unwrap();
    let url = format!("{base}/v1/persistent-queries/{id}/events");
    let first = c.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = c.get(&url).send().await.unwrap();
    let status = second.status().as_u16();
    let body: Value = second.json().await.unwrap();
    assert_limit(status, &body, "limits.max_subscribers", 1);
    // A webhook is a subscriber too.
    let (status, body) = register(
        &c,
        &base,
        json!({"epl": "select a from S", "webhook": "http://8.8.8.8:9/x"}),
    )
    .await;
    assert_limit(status, &body, "limits.max_subscribers", 1);
    drop(first);
    for _ in 0..200 {
        if svc.list()[0].subscribers == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let again = c.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn limit_stream_name_length_and_stream_count() {
    let svc = with_limits(Limits {
        max_stream_name_len: 16,
        max_streams: 2,
        ..Limits::default()
    });
    let base = serve(svc).await;
    let c = reqwest::Client::new();
    let post = |stream: String| {
        let c = c.clone();
        let url = format!("{base}/v1/events/{stream}");
        async move {
            let r = c.post(url).json(&json!({"x": 1})).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post("s".repeat(17)).await;
    assert_limit(status, &body, "limits.max_stream_name_len", 16);
    let (status, body) = post("s".repeat(16)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post("second".into()).await;
    assert_eq!(status, 200);
    let (status, body) = post("third".into()).await;
    assert_limit(status, &body, "limits.max_streams", 2);
    // Known streams still take events; a statement naming a new one is refused.
    let (status, _) = post("second".into()).await;
    assert_eq!(status, 200);
    let (status, body) = register(&c, &base, json!({"epl": "select x from third"})).await;
    assert_limit(status, &body, "limits.max_streams", 2);
    let (status, body) = register(&c, &base, json!({"epl": "select x from second"})).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn webhook_to_the_agents_loopback_publish_api_is_refused_naming_the_rule() {
    let svc = PqaService::new(ServiceConfig::default());
    let base = serve(svc.clone()).await;
    let c = reqwest::Client::new();
    for url in [
        "http://127.0.0.1:7070/v1/tables/x",
        "http://localhost:7070/v1/tables/x",
        "http://[::1]:7070/v1/tables/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "ftp://example.com/hook",
    ] {
        let (status, body) =
            register(&c, &base, json!({"epl": "select x from S", "webhook": url})).await;
        assert_eq!(status, 400, "{url}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("webhook") && error.contains("refused"),
            "{error}"
        );
        assert!(
            error.contains("webhook_allow_hosts") || error.contains("only http and https"),
            "{error}"
        );
    }
    let e = body_of(
        register(
            &c,
            &base,
            json!({"epl": "select x from S", "webhook": "http://127.0.0.1:7070/v1/tables/x"}),
        )
        .await,
    );
    assert!(e.contains("127.0.0.1 is a loopback address"), "{e}");
    // Nothing was registered by the refused requests.
    assert!(svc.list().is_empty());
    // Over XML-RPC too.
    let call = "<?xml version=\"1.0\"?><methodCall><methodName>pqa.register</methodName><params><param><value><string>select x from S</string></value></param><param><value><string>all</string></value></param><param><value><string>http://127.0.0.1:7070/v1/tables/x</string></value></param></params></methodCall>";
    let r = rpc(&c, &base, call.to_string()).await;
    assert!(r.contains("<fault>") && r.contains("loopback"), "{r}");
    assert!(svc.list().is_empty());
    still_answers(&c, &base).await;
}

fn body_of((_, body): (u16, Value)) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn webhook_redirect_to_a_host_not_allowed_is_not_followed() {
    // The forbidden target: 127.0.0.2, not on the allowlist.
    let forbidden_hits = Arc::new(AtomicUsize::new(0));
    let hits = forbidden_hits.clone();
    let forbidden = axum::Router::new().route(
        "/x",
        axum::routing::post(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let forbidden_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, forbidden).await.unwrap() });

    // The allowed receiver answers every POST with a redirect there.
    let redirects = Arc::new(AtomicUsize::new(0));
    let seen = redirects.clone();
    let target = format!("http://{forbidden_addr}/x");
    let allowed = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, target)],
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let allowed_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, allowed).await.unwrap() });

    let svc = PqaService::new(ServiceConfig {
        webhook_allow_hosts: vec!["127.0.0.1".to_string()],
        ..ServiceConfig::default()
    });
    let hook = format!("http://{allowed_addr}/hook");
    svc.webhook_policy().check_resolved(&hook).await.unwrap();
    let mut sink = fleetsql_pqa::WebhookSink::with_policy(&hook, svc.webhook_policy()).unwrap();
    sink.max_attempts = 2;
    sink.backoff = std::time::Duration::from_millis(10);
    let n = fleetsql_pqa::Notification {
        query: "q".into(),
        seq: 1,
        time: 0,
        rows: Vec::new(),
        old_rows: Vec::new(),
    };
    let e = fleetsql_pqa::Sink::deliver(&sink, &n, "{}")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("redirect refused"), "{e}");
    assert!(redirects.load(Ordering::SeqCst) >= 1);
    assert_eq!(forbidden_hits.load(Ordering::SeqCst), 0);

    // Allowing the second host lets the same redirect through: the test
    // can tell a refused redirect from a broken receiver.
    let open =
        fleetsql_pqa::WebhookPolicy::allowing(&["127.0.0.1".to_string(), "127.0.0.2".to_string()]);
    let sink = fleetsql_pqa::WebhookSink::with_policy(&hook, &open).unwrap();
    fleetsql_pqa::Sink::deliver(&sink, &n, "{}").await.unwrap();
    assert_eq!(forbidden_hits.load(Ordering::SeqCst), 1);
}
