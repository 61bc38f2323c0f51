//! The HTTP surface over a real socket: register/list/delete over HTTP and
//! XML-RPC, SSE and WebSocket subscribers, event ingestion, slow subscribers,
//! the webhook sink.

use std::sync::Arc;

use fleetsql_pqa::{PqaService, Publish, ServiceConfig, router};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

async fn serve(svc: PqaService) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(svc)).await.unwrap() });
    format!("http://{addr}")
}

fn service() -> PqaService {
    PqaService::new(ServiceConfig::default())
}

/// Reads SSE frames until `n` frames of `event:` lines were seen.
async fn read_sse(resp: reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("SSE frame in time")
            .expect("stream open")
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut ev = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    ev = Some(e.trim().to_string());
                }
                if let Some(d) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(d.trim()).unwrap());
                }
            }
            if let (Some(e), Some(d)) = (ev, data) {
                out.push((e, d));
            }
        }
    }
    out
}

#[tokio::test]
async fn register_list_delete_and_sse_notifications() {
    let svc = service();
    let base = serve(svc.clone()).await;
    let c = reqwest::Client::new();
    let epl = "select avg(memutil) as avgMemUtil from MemUtilEvent.win:time(20 sec) where avgMemUtil > 70";
    let r = c
        .post(format!("{base}/v1/persistent-queries"))
        .json(&json!({"epl": epl}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let reg: Value = r.json().await.unwrap();
    let id = reg["id"].as_str().unwrap().to_string();
    assert_eq!(reg["topic"], json!(format!("pqa/{id}")));

    // The same statement, written differently, shares the instance and id.
    let r: Value = c
        .post(format!("{base}/v1/persistent-queries"))
        .json(
            &json!({"epl": epl.replace(' ', "\n  ").replace("select", "SELECT"), "publish": "all"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["id"], json!(id));
    assert_eq!(svc.running_statements(), 1);

    let sse = c
        .get(format!("{base}/v1/persistent-queries/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    // Wait until the SSE handler has subscribed before producing events.
    for _ in 0..100 {
        if svc.list()[0].subscribers > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let ndjson = "{\"memutil\": 60}\n{\"memutil\": 90}\n{\"memutil\": 30}\n{\"memutil\": 100}\n";
    let r: Value = c
        .post(format!("{base}/v1/events/MemUtilEvent"))
        .body(ndjson)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["accepted"], json!(4));
    // Triggers: 75 (60,90) and 70? no: (60,90,30,100) = 70, not > 70. So exactly one.
    let r: Value = c
        .post(format!("{base}/v1/events/MemUtilEvent"))
        .json(&json!({"memutil": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["accepted"], json!(1));
    // Deleting both references closes the topic: the SSE stream ends with a reason.
    let d: Value = c
        .delete(format!("{base}/v1/persistent-queries/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["refs"], json!(1));
    let d: Value = c
        .delete(format!("{base}/v1/persistent-queries/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["deleted"], json!(true));
    let frames = read_sse(sse, 3).await;
    assert_eq!(frames[0].0, "result");
    assert_eq!(frames[0].1["seq"], json!(1));
    assert_eq!(frames[0].1["rows"], json!([{"avgMemUtil": 75.0}]));
    // (60+90+30+100+100)/5 = 76.
    assert_eq!(frames[1].1["rows"], json!([{"avgMemUtil": 76.0}]));
    assert_eq!(frames[2].0, "close");
    assert_eq!(frames[2].1["reason"], json!("query deleted"));
    assert_eq!(svc.running_statements(), 0);

    let l: Value = c
        .get(format!("{base}/v1/persistent-queries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l["queries"], json!([]));
    let r = c
        .delete(format!("{base}/v1/persistent-queries/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert!(e["hint"].as_str().is_some());
}

#[tokio::test]
async fn parse_errors_map_to_400_with_position() {
    let base = serve(service()).await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/v1/persistent-queries"))
        .json(&json!({"epl": "select avg(x)\nfrom S.win:time(20 parsecs)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["line"].clone(), e["column"].clone()),
        (json!(2), json!(20))
    );
    assert!(e["error"].as_str().unwrap().contains("expected"));
    let r = c
        .post(format!("{base}/v1/persistent-queries"))
        .json(&json!({"epl": "select x from S", "publish": "median"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(format!("{base}/v1/events/S"))
        .body("[1, 2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

fn xml_call(method: &str, params: &[&str]) -> String {
    let ps: String = params
        .iter()
        .map(|p| format!("<param><value><string>{p}</string></value></param>"))
        .collect();
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{ps}</params></methodCall>"
    )
}

#[tokio::test]
async fn xmlrpc_register_list_delete() {
    let svc = service();
    let base = serve(svc.clone()).await;
    let c = reqwest::Client::new();
    let rpc = |body: String| {
        let c = c.clone();
        let url = format!("{base}/RPC2");
        async move {
            c.post(url)
                .header("content-type", "text/xml")
                .body(body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let r = rpc(xml_call(
        "pqa.register",
        &["select x from S(x &gt; 3)", "current"],
    ))
    .await;
    let resp =
        dxr::MethodResponse::from_xml(r.trim_start_matches("<?xml version=\"1.0\"?>").trim())
            .expect(&r);
    let dxr::Value::Struct(m) = resp.value else {
        panic!("{r}")
    };
    let dxr::Value::String(id) = &m["id"] else {
        panic!("{r}")
    };
    assert_eq!(svc.list()[0].publish, Publish::Current);
    assert_eq!(svc.list()[0].epl, "select x from S(x > 3)");

    let r = rpc(xml_call("pqa.list", &[])).await;
    assert!(r.contains(id.as_str()), "{r}");
    let r = rpc(xml_call("pqa.delete", &[id])).await;
    assert!(r.contains("<boolean>1</boolean>"), "{r}");
    assert!(svc.list().is_empty());
    let r = rpc(xml_call("pqa.delete", &[id])).await;
    assert!(
        r.contains("<fault>") && r.contains("no persistent query"),
        "{r}"
    );
    let r = rpc(xml_call("pqa.register", &["select from"])).await;
    assert!(r.contains("<fault>") && r.contains("expected"), "{r}");
}

#[tokio::test]
async fn websocket_subscriber_and_publish_max() {
    let svc = service();
    let base = serve(svc.clone()).await;
    let reg = svc.register("select x from S", Publish::Max, None).unwrap();
    let url = format!(
        "{}/v1/persistent-queries/{}/ws",
        base.replace("http", "ws"),
        reg.id
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for _ in 0..100 {
        if svc.list()[0].subscribers > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for x in [3, 9, 4] {
        svc.push_event("S", &json!({"x": x})).unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        got.push(v["rows"][0]["x"].clone());
    }
    // Running maximum of x.
    assert_eq!(got, vec![json!(3.0), json!(9.0), json!(9.0)]);
    svc.delete(&reg.id).unwrap();
    let m = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(m.is_close(), "{m:?}");
}

#[tokio::test]
async fn slow_subscriber_is_dropped_with_reason_and_engine_goes_on() {
    let svc = PqaService::new(ServiceConfig {
        topic_capacity: 4,
        ..ServiceConfig::default()
    });
    let reg = svc.register("select x from S", Publish::All, None).unwrap();
    let topic = svc.topic(&reg.id).unwrap();
    let mut slow = topic.subscribe();
    let mut fast = topic.subscribe();
    for x in 0..10 {
        svc.push_event("S", &json!({"x": x})).unwrap();
        assert_eq!(fast.next().await.unwrap().notification.seq, x + 1);
    }
    let reason = slow.next().await.unwrap_err();
    assert_eq!(reason, fleetsql_pqa::CloseReason::TooSlow { dropped: 6 });
    assert!(reason.to_string().contains("too slow"));
}

#[tokio::test]
async fn webhook_retries_until_delivered() {
    let hits: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, n) = (hits.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let (h, n) = (h.clone(), n.clone());
            async move {
                // The first attempt fails: the sink must retry.
                if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                h.lock().push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The receiver is on loopback, which webhooks reach only when allowed.
    let svc = PqaService::new(ServiceConfig {
        webhook_allow_hosts: vec!["127.0.0.1".to_string()],
        ..ServiceConfig::default()
    });
    let reg = svc
        .register(
            "select x from S where x > 1",
            Publish::All,
            Some(&format!("http://{addr}/hook")),
        )
        .unwrap();
    svc.push_event("S", &json!({"x": 1})).unwrap();
    svc.push_event("S", &json!({"x": 2})).unwrap();
    for _ in 0..500 {
        if !hits.lock().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let got = hits.lock().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["rows"], json!([{"x": 2}]));
    assert_eq!(got[0]["query"], json!(reg.id));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn explicit_clock_drives_time_windows_through_the_service() {
    let svc = service();
    let reg = svc
        .register(
            "select count(*) as n from S.win:time(10 sec)",
            Publish::Current,
            None,
        )
        .unwrap();
    let mut sub = svc.topic(&reg.id).unwrap().subscribe();
    svc.push_event("S", &json!({"x": 1})).unwrap();
    svc.advance_time(5_000);
    svc.push_event("S", &json!({"x": 2})).unwrap();
    svc.advance_time(10_000);
    let ns: Vec<Value> = [sub.next().await, sub.next().await, sub.next().await]
        .into_iter()
        .map(|p| p.unwrap().notification.rows[0]["n"].clone())
        .collect();
    // 1, then 2, then the first event leaves at 10 s: 1.
    assert_eq!(ns, vec![json!(1), json!(2), json!(1)]);
    let r = svc.push_events("S", [json!({"x": "text"}), json!({"x": 3})].iter());
    assert_eq!((r.accepted, r.rejected), (1, 1));
}

#[tokio::test]
async fn slow_sse_client_gets_a_close_frame_with_the_reason() {
    let svc = PqaService::new(ServiceConfig {
        topic_capacity: 4,
        ..ServiceConfig::default()
    });
    let base = serve(svc.clone()).await;
    let reg = svc.register("select x from S", Publish::All, None).unwrap();
    let resp = reqwest::get(format!("{base}/v1/persistent-queries/{}/events", reg.id))
        .await
        .unwrap();
    assert!(resp.status().is_success());
    // The runtime has one thread and this call does not yield: the SSE task
    // cannot read while 100 notifications go into a topic that holds 4.
    let events: Vec<Value> = (0..100).map(|x| json!({"x": x})).collect();
    let res = svc.push_events("S", events.iter());
    assert_eq!(res.accepted, 100);
    let frames = read_sse(resp, 1).await;
    assert_eq!(frames[0].0, "close", "{frames:?}");
    assert_eq!(
        frames[0].1["reason"],
        json!("subscriber too slow: 96 notifications dropped; reconnect to resume")
    );
    // The query goes on for everyone else.
    let mut sub = svc.topic(&reg.id).unwrap().subscribe();
    svc.push_event("S", &json!({"x": 1000})).unwrap();
    let next = sub.next().await.unwrap();
    assert_eq!(next.notification.seq, 101);
}

/// `select irstream` over HTTP: the SSE notification carries the rows
/// leaving the window as `old_rows`, beside the rows entering.
#[tokio::test]
async fn irstream_rows_leaving_reach_sse_subscribers_as_old_rows() {
    let svc = service();
    let base = serve(svc.clone()).await;
    let c = reqwest::Client::new();
    let reg: Value = c
        .post(format!("{base}/v1/persistent-queries"))
        .json(&json!({"epl": "select irstream x from S#length(1)", "publish": "all"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = reg["id"].as_str().expect("registered").to_string();
    let sse = c
        .get(format!("{base}/v1/persistent-queries/{id}/events"))
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        if svc.list()[0].subscribers > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = c
        .post(format!("{base}/v1/events/S"))
        .body("{\"x\": 1}\n{\"x\": 2}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let frames = read_sse(sse, 2).await;
    assert_eq!(frames[0].1["rows"], json!([{"x": 1}]));
    assert_eq!(frames[0].1.get("old_rows"), None, "{}", frames[0].1);
    assert_eq!(frames[1].1["rows"], json!([{"x": 2}]));
    assert_eq!(frames[1].1["old_rows"], json!([{"x": 1}]));
}
