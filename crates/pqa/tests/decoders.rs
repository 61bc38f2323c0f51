//! Property tests of what a client sends the persistent-query service
//! (issue 17 item 7): EPL statements and XML-RPC calls, random and
//! mutations of valid ones, are registered or refused with an error, never
//! a panic; the service answers the next request.

use std::sync::LazyLock;

use fleetsql_pqa::{PqaService, Publish, ServiceConfig, router};
use proptest::prelude::*;

/// Every statement of the golden files: valid EPL to mutate.
fn valid_statements() -> Vec<String> {
    [
        include_str!("golden/streams.epl"),
        include_str!("golden/output.epl"),
        include_str!("golden/views.epl"),
    ]
    .iter()
    .flat_map(|file| file.lines())
    .filter_map(|line| {
        line.strip_prefix("epl ")
            .or_else(|| line.strip_prefix("setup "))
    })
    .map(str::to_string)
    .chain(
        [
            "select a.x, b.y from pattern [every a=A -> b=B(b.k = a.k) where timer:within(5 sec)]",
            "select avg(v), max(v) from S(v > 0)#time_batch(1 min) group by host having count(*) > 2 order by host limit 3",
            "select * from A#length(3) as a, B#keepall as b where a.k = b.k output last every 2 seconds",
            "select case when x > 1 then 'big' else 'small' end as size, coalesce(y, 0) from S",
        ]
        .map(str::to_string),
    )
    .collect()
}

static VALID: LazyLock<Vec<String>> = LazyLock::new(valid_statements);

/// EPL's own vocabulary, for token-level mutations that get past the lexer.
const TOKENS: &[&str] = &[
    "select",
    "from",
    "where",
    "group",
    "by",
    "having",
    "order",
    "limit",
    "output",
    "every",
    "insert",
    "into",
    "pattern",
    "(",
    ")",
    "[",
    "]",
    "#",
    ".",
    ",",
    "->",
    "=",
    "*",
    "+",
    "-",
    "/",
    "'",
    "\"",
    "as",
    "and",
    "or",
    "not",
    "count(*)",
    "sum(",
    "length(",
    "time(",
    "1",
    "0",
    "-9223372036854775808",
    "99999999999999999999",
    "1e308",
    "sec",
    "min",
    "x",
    "S",
    "irstream",
    "rstream",
    "case",
    "when",
    "then",
    "end",
    "snapshot",
    "first",
    "last",
    "all",
    "timer:within(",
];

#[derive(Debug, Clone)]
enum Edit {
    DeleteChars { at: usize, len: usize },
    InsertToken { at: usize, token: usize },
    DuplicateSpan { at: usize, len: usize },
    Truncate { at: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..8usize).prop_map(|(at, len)| Edit::DeleteChars { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, token)| Edit::InsertToken { at, token }),
        (any::<usize>(), 1..40usize).prop_map(|(at, len)| Edit::DuplicateSpan { at, len }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
    ]
}

/// Applies `edit` on character boundaries (EPL text is a `String`).
fn apply(text: &str, edit: &Edit) -> String {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len().max(1);
    let (before, after): (Vec<char>, Vec<char>) = match edit {
        Edit::DeleteChars { at, len } => {
            let at = at % n;
            let end = (at + len).min(chars.len());
            let mut out = chars[..at.min(chars.len())].to_vec();
            out.extend_from_slice(&chars[end.max(at.min(chars.len()))..]);
            (out, Vec::new())
        }
        Edit::InsertToken { at, token } => {
            let at = at % (chars.len() + 1);
            let mut out = chars[..at].to_vec();
            out.push(' ');
            out.extend(TOKENS[token % TOKENS.len()].chars());
            out.push(' ');
            (out, chars[at..].to_vec())
        }
        Edit::DuplicateSpan { at, len } => {
            let at = at % n;
            let end = (at + len).min(chars.len());
            let mut out = chars[..end].to_vec();
            out.extend_from_slice(&chars[at.min(end)..end]);
            (out, chars[end..].to_vec())
        }
        Edit::Truncate { at } => (chars[..at % n].to_vec(), Vec::new()),
    };
    before.into_iter().chain(after).collect()
}

fn service() -> PqaService {
    PqaService::new(ServiceConfig::default())
}

/// Registers `epl` and removes it again: refused or registered, the
/// service answers.
fn register(svc: &PqaService, epl: &str) {
    if let Ok(r) = svc.register(epl, Publish::All, None) {
        let _ = svc.delete(&r.id);
    }
}

struct Served {
    runtime: tokio::runtime::Runtime,
    base: String,
    client: reqwest::Client,
}

/// One service behind a real socket for every XML-RPC case.
static SERVED: LazyLock<Served> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("test runtime");
    let base = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback listener");
        let addr = listener.local_addr().expect("bound address");
        tokio::spawn(async move { axum::serve(listener, router(service())).await });
        format!("http://{addr}/RPC2")
    });
    Served {
        runtime,
        base,
        client: reqwest::Client::new(),
    }
});

/// Posts `body` to `/RPC2`: an XML answer (a result or a fault), never a
/// dropped connection.
fn xmlrpc(body: String) -> (u16, String) {
    let served = &*SERVED;
    served.runtime.block_on(async {
        let r = served
            .client
            .post(&served.base)
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .expect("the service answers (it did not die)");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    })
}

fn call(method: &str, params: &[String]) -> String {
    let params: String = params
        .iter()
        .map(|p| format!("<param><value>{p}</value></param>"))
        .collect();
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"
    )
}

fn xml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 <>&;]{0,20}".prop_map(|s| format!("<string>{s}</string>")),
        any::<i64>().prop_map(|i| format!("<i4>{i}</i4>")),
        any::<f64>().prop_map(|f| format!("<double>{f}</double>")),
        Just("<boolean>2</boolean>".to_string()),
        Just("<base64>!!!</base64>".to_string()),
        Just("<dateTime.iso8601>99999999T99:99:99</dateTime.iso8601>".to_string()),
        Just("<nil/>".to_string()),
        Just(String::new()),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(|vs| format!(
                "<array><data>{}</data></array>",
                vs.iter()
                    .map(|v| format!("<value>{v}</value>"))
                    .collect::<String>()
            )),
            proptest::collection::vec(("[a-z]{0,5}", inner), 0..6).prop_map(|ms| format!(
                "<struct>{}</struct>",
                ms.iter()
                    .map(|(k, v)| format!("<member><name>{k}</name><value>{v}</value></member>"))
                    .collect::<String>()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_valid_epl_is_registered_or_refused(
        statement in any::<usize>(),
        edits in proptest::collection::vec(edit(), 1..5),
    ) {
        let svc = service();
        let mut epl = VALID[statement % VALID.len()].clone();
        for e in &edits {
            epl = apply(&epl, e);
        }
        register(&svc, &epl);
        // Still answering.
        prop_assert!(svc.register("select x from StillUp", Publish::All, None).is_ok());
    }

    #[test]
    fn random_token_soup_and_text_is_registered_or_refused(
        tokens in proptest::collection::vec(any::<usize>(), 0..40),
        text in "\\PC{0,120}",
    ) {
        let svc = service();
        let soup: Vec<&str> = tokens.iter().map(|t| TOKENS[t % TOKENS.len()]).collect();
        register(&svc, &soup.join(" "));
        register(&svc, &format!("select {}", soup.join(" ")));
        register(&svc, &text);
    }

    #[test]
    fn random_xmlrpc_calls_answer_xml(
        method in proptest::sample::select(vec!["pqa.register", "pqa.delete", "pqa.list", "registerQuery", "nope", ""]),
        params in proptest::collection::vec(xml_value(), 0..4),
    ) {
        let (status, body) = xmlrpc(call(method, &params));
        prop_assert_eq!(status, 200, "{}", body);
        prop_assert!(body.contains("methodResponse"), "{}", body);
    }

    #[test]
    fn mutated_xmlrpc_bodies_answer(
        statement in any::<usize>(),
        cut in any::<usize>(),
        insert in "[<>/a-z\"&;]{0,12}",
    ) {
        let epl = VALID[statement % VALID.len()].replace('&', "&amp;").replace('<', "&lt;");
        let valid = call("pqa.register", &[format!("<string>{epl}</string>")]);
        let chars: Vec<char> = valid.chars().collect();
        let at = cut % chars.len();
        let mutated: String = chars[..at].iter().copied().chain(insert.chars()).chain(chars[at..].iter().copied()).collect();
        let (status, _) = xmlrpc(mutated);
        prop_assert!(status < 500, "status {}", status);
    }
}
