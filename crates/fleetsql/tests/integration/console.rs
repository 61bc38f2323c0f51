//! The web console in a real headless Chromium, driven over WebDriver:
//! each page is used as an operator would, what it shows is compared with
//! the HTTP API's answers, and a screenshot of each page is saved under
//! `<target dir>/fleetsql-screenshots/`.

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{BINARY, TestDemo};
use crate::webdriver::{Browser, CONTROL, ENTER, NULL_KEY};

const CONTINENT_HITS: &str = "SELECT    c.continent_name ,
          SUM(l.hits) hits
FROM      load_info l,
          region_data r,
          continent_data c
WHERE     l.georegion=r.id AND
          r.continent=c.continent
GROUP BY c.continent_name
ORDER BY hits DESC;";

/// Bounds every wait on the page.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// chromedriver on a free loopback port; killed on drop with the browsers
/// it started (its process group), even when a test fails before it
/// closes its browser: killing chromedriver alone leaves them running.
struct ChromeDriver {
    process: Child,
    url: String,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // `--` first: without it procps's kill reads `-PID` as an option,
        // and a signal to pid -1 (every process this user may signal) is
        // what happened.
        let group = self.process.id();
        if group > 1 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--"])
                .arg(format!("-{group}"))
                .status();
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        // chromedriver takes no port 0, so a port just seen free is used;
        // another process taking it in between makes a start fail, so a
        // few are tried.
        for _ in 0..3 {
            let port = free_loopback_port();
            let process = Command::new("chromedriver")
                .process_group(0)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver is installed (scripts/apt/console.txt: chromium-driver)");
            let driver = ChromeDriver {
                process,
                url: format!("http://127.0.0.1:{port}"),
            };
            if driver.wait_ready().await {
                return driver;
            }
        }
        panic!("chromedriver did not become ready on three ports");
    }

    async fn wait_ready(&self) -> bool {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/status", self.url)).send().await
                && let Ok(body) = r.json::<Value>().await
                && body["value"]["ready"].as_bool() == Some(true)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn browser(&self, profile: &std::path::Path) -> Browser {
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        Browser::start(&self.url, capabilities).await
    }
}

fn screenshot_dir() -> PathBuf {
    // BINARY is <target>/debug/fleetsql.
    let dir = PathBuf::from(BINARY)
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("fleetsql-screenshots"))
        .unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await;
    assert!(
        png.starts_with(b"\x89PNG"),
        "screenshot of {name} is no PNG"
    );
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Evaluates `expression` in the page until it is truthy; returns its value.
async fn wait_for(browser: &Browser, what: &str, expression: &str) -> Value {
    let deadline = Instant::now() + PAGE_WAIT;
    let script = format!("return ({expression});");
    loop {
        let value = browser.execute(&script).await;
        let truthy = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::Array(a) => !a.is_empty(),
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return value;
        }
        let page_error = browser
            .execute("return [...document.querySelectorAll('.error')].filter(e => !e.hidden).map(e => e.textContent).join('\\n');").await;
        assert!(
            Instant::now() < deadline,
            "waited {PAGE_WAIT:?} for {what} ({expression}); errors on the page: {page_error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open(browser: &Browser, base: &str, view: &str) {
    browser.goto(&format!("{base}/#{view}")).await;
    wait_for(
        browser,
        "the page to start",
        &format!(
            "document.body.dataset.ready === 'true' && document.body.dataset.view === '{view}'"
        ),
    )
    .await;
}

/// Nothing was logged at error level since the last look.
async fn assert_no_console_errors(browser: &Browser, pages: &str) {
    let log = browser.console_log().await;
    let errors: Vec<&Value> = log.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(
        errors.is_empty(),
        "browser console errors on {pages}: {errors:#?}"
    );
}

fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const RESULT_ROWS: &str = "[...document.querySelectorAll('#result-table tbody tr')].map(tr => [...tr.children].map(td => td.textContent))";

fn texts(value: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(value.clone()).unwrap()
}

async fn http_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_in_headless_chromium() {
    let reports = tempfile::tempdir().unwrap();
    let definition = std::fs::read_to_string(
        crate::fixture::repo_root().join("demo/reports/continent_hits.toml"),
    )
    .unwrap()
    .replace("every = \"1m\"", "every = \"1s\"");
    assert!(definition.contains("every = \"1s\""));
    std::fs::write(reports.path().join("continent_hits.toml"), definition).unwrap();
    let extra: Vec<OsString> = vec![
        "--reports-dir".into(),
        reports.path().into(),
        "--reports-db".into(),
        reports.path().join("runs.sqlite").into(),
    ];
    let demo = TestDemo::start_with(2, 3, "2s", &extra).await;
    let base = demo.url();
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;
    let run_keys = format!("{CONTROL}{ENTER}{NULL_KEY}");

    // --- query page: the seed's continent query, typed and run with Ctrl+Enter.
    open(&browser, &base, "query").await;
    let editor = browser.find("#sql-input").await;
    browser.clear(&editor).await;
    browser.send_keys(&editor, CONTINENT_HITS).await;
    let highlighted = wait_for(
        &browser,
        "SQL highlighting",
        "[...document.querySelectorAll('#sql-highlight .tok-kw')].map(e => e.textContent)",
    )
    .await;
    assert!(
        highlighted
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "SELECT"),
        "keywords are not highlighted: {highlighted}"
    );
    // The page and the API must read the same generation to agree row for
    // row; a generation lasts 2 s, so a few tries suffice.
    let mut matched = false;
    let mut api_answer = Value::Null;
    for _ in 0..10 {
        browser
            .execute("document.getElementById('result-meta').removeAttribute('data-row-count');")
            .await;
        browser.send_keys(&editor, &run_keys).await;
        wait_for(
            &browser,
            "the query answer",
            "document.getElementById('result-meta').dataset.rowCount",
        )
        .await;
        let (status, api) = demo.query_json(CONTINENT_HITS).await;
        assert!(status.is_success(), "{api}");
        let page_generation = wait_for(
            &browser,
            "the badge",
            "document.getElementById('gen-badge').dataset.generation",
        )
        .await;
        if page_generation.as_str() != Some(api["generation"]["id"].to_string().as_str()) {
            continue;
        }
        let shown = texts(&browser.execute(&format!("return {RESULT_ROWS};")).await);
        let expected: Vec<Vec<String>> = api["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(cell_text).collect())
            .collect();
        assert!(!expected.is_empty(), "the continent query found no rows");
        assert_eq!(shown, expected, "the page shows other rows than the API");
        let meta = browser.text(&browser.find("#result-meta").await).await;
        assert!(
            meta.starts_with(&format!("{} rows", expected.len())) && meta.contains("ms"),
            "row count and time taken: {meta}"
        );
        matched = true;
        api_answer = api;
        break;
    }
    assert!(
        matched,
        "the page and the API never read the same generation"
    );
    // Download as CSV: the file the page builds holds the rows the API
    // gave (the Blob is read where the page hands it to the browser).
    browser
        .execute(
            "window.__csv = null; window.__csvName = null;
             const make = URL.createObjectURL;
             URL.createObjectURL = (blob) => { blob.text().then((t) => { window.__csv = t; }); return make.call(URL, blob); };
             const click = HTMLAnchorElement.prototype.click;
             HTMLAnchorElement.prototype.click = function () { window.__csvName = this.download; return click.call(this); };",
        )
        .await;
    browser.click(&browser.find("#csv").await).await;
    let csv = wait_for(&browser, "the CSV download", "window.__csv").await;
    assert_eq!(
        browser.execute("return window.__csvName;").await,
        "fleetsql-result.csv"
    );
    let csv_lines: Vec<&str> = csv.as_str().unwrap().lines().collect();
    let header: Vec<&str> = api_answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(csv_lines[0], header.join(","));
    let api_lines: Vec<String> = api_answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(cell_text)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(csv_lines[1..], api_lines[..], "CSV: {csv}");
    let badge_text = browser.text(&browser.find("#gen-badge").await).await;
    assert!(
        badge_text.contains("clusters") && badge_text.contains("machines"),
        "badge: {badge_text}"
    );
    // Sorting by hits ascending puts the smallest first.
    let hits_header = browser
        .find_xpath("//table[@id='result-table']//th[text()='hits']")
        .await;
    browser.click(&hits_header).await;
    let sorted = texts(&browser.execute(&format!("return {RESULT_ROWS};")).await);
    let hits: Vec<i64> = sorted.iter().map(|r| r[1].parse().unwrap()).collect();
    assert!(
        hits.windows(2).all(|w| w[0] <= w[1]),
        "not sorted: {hits:?}"
    );
    let history = browser
        .execute("return localStorage.getItem('fleetsql.history');")
        .await;
    assert!(
        history
            .as_str()
            .unwrap_or_default()
            .contains("continent_data"),
        "the query is not in the history: {history}"
    );
    screenshot(&browser, "query").await;

    assert_no_console_errors(&browser, "the query page").await;

    // An error shows the server's own message. The browser logs the 400
    // answer as a failed resource load: that one entry is expected.
    browser.clear(&editor).await;
    browser
        .send_keys(
            &editor,
            &format!("SELECT nope FROM continent_data{run_keys}"),
        )
        .await;
    let error = wait_for(
        &browser,
        "the error",
        "!document.getElementById('query-error').hidden && document.getElementById('query-error').textContent",
    )
    .await;
    let (_, api_error) = demo.query_json("SELECT nope FROM continent_data").await;
    assert!(
        error
            .as_str()
            .unwrap()
            .contains(api_error["error"].as_str().unwrap()),
        "page error {error} is not the server's {api_error}"
    );
    screenshot(&browser, "query-error").await;
    let log = browser.console_log().await;
    assert!(
        log.len() == 1
            && log[0]["source"] == "network"
            && log[0]["message"].as_str().unwrap().contains(
                "/v1/query - Failed to load resource: the server responded with a status of 400"
            ),
        "only the refused query's 400 is logged: {log:#?}"
    );

    // --- table browser: a fleet table's columns and publishers, as the API knows them.
    open(&browser, &base, "tables").await;
    wait_for(
        &browser,
        "the sys table",
        "document.querySelector('.table-entry[data-table=\"sys\"] li')",
    )
    .await;
    let tables = http_json(&format!("{base}/v1/tables")).await;
    let sys = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "sys")
        .expect("sys in /v1/tables")
        .clone();
    let (_, sys_schema) = demo.query_json("SELECT * FROM sys LIMIT 0").await;
    let expected_columns: Vec<String> = sys_schema["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["name"].as_str().unwrap(),
                c["type"].as_str().unwrap()
            )
        })
        .collect();
    let shown_columns: Vec<String> = serde_json::from_value(
        browser
            .execute(
                "return [...document.querySelectorAll('.table-entry[data-table=\"sys\"] li')].map(li => li.textContent);",
            )
            .await,
    )
    .unwrap();
    assert_eq!(shown_columns, expected_columns);
    assert!(shown_columns.contains(&"_host Utf8".to_string()));
    let card = browser
        .text(&browser.find(".table-entry[data-table=\"sys\"]").await)
        .await;
    // 2 clusters x 3 simulated machines plus the local agent.
    assert_eq!(sys["publishers_total"], 7, "{sys}");
    assert!(card.contains("7 machines publish it"), "{card}");
    assert!(
        card.contains(sys["publishers"][0].as_str().unwrap()),
        "{card}"
    );
    for name in ["continent_data", "load_info", "fleet_clusters"] {
        browser
            .find(&format!(".table-entry[data-table=\"{name}\"]"))
            .await;
    }
    screenshot(&browser, "tables").await;
    let link = browser
        .find(".table-entry[data-table=\"continent_data\"] a.table-link")
        .await;
    browser.click(&link).await;
    let filled = wait_for(
        &browser,
        "the query page with the table's SELECT",
        "document.body.dataset.view === 'query' && document.getElementById('sql-input').value",
    )
    .await;
    assert_eq!(
        filled.as_str().unwrap(),
        "SELECT continent, continent_name\nFROM continent_data\nLIMIT 100"
    );

    // --- fleet view.
    open(&browser, &base, "fleet").await;
    let clusters = wait_for(
        &browser,
        "the clusters",
        "[...document.querySelectorAll('#fleet-clusters tbody tr')].map(tr => tr.children[0].textContent)",
    )
    .await;
    let (_, api_clusters) = demo
        .query_json("SELECT cluster FROM fleet_clusters ORDER BY cluster")
        .await;
    let expected: Vec<Value> = api_clusters["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(clusters.as_array().unwrap(), &expected);
    wait_for(
        &browser,
        "the fleet_nodes note or table",
        "document.getElementById('fleet-nodes-status').textContent",
    )
    .await;
    screenshot(&browser, "fleet").await;

    // --- persistent queries: register, see results arrive live, delete.
    open(&browser, &base, "persistent").await;
    let epl = browser.find("#pq-epl").await;
    browser
        .send_keys(
            &epl,
            "select count(*) as n, sum(v) as total from ConsoleProbe.win:length(1000)",
        )
        .await;
    browser.click(&browser.find("#pq-register").await).await;
    wait_for(
        &browser,
        "the registered query",
        "document.querySelector('#pq-list tbody tr') && document.getElementById('pq-watching').textContent.includes('waiting')",
    )
    .await;
    // The page subscribes right after registering; events posted before the
    // subscription is open produce no notification it sees, so post until
    // one arrives.
    let client = reqwest::Client::new();
    let mut arrived = Value::Null;
    for _ in 0..50 {
        let posted = client
            .post(format!("{base}/v1/events/ConsoleProbe"))
            .json(&json!({ "v": 5 }))
            .send()
            .await
            .unwrap();
        assert!(posted.status().is_success());
        arrived = browser
            .execute(
                "const r = document.querySelector('#pq-results tbody tr'); return r && [...r.children].map(td => td.textContent);",
            )
            .await;
        if !arrived.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !arrived.is_null(),
        "no persistent-query result reached the page"
    );
    let newest = texts(&json!([arrived]));
    assert_eq!(newest[0].len(), 4, "#, time, n, total: {newest:?}");
    let n: i64 = newest[0][2].parse().unwrap();
    let total: i64 = newest[0][3].parse().unwrap();
    assert!(n >= 1 && total == 5 * n, "n={n} total={total}");
    screenshot(&browser, "persistent-queries").await;
    browser
        .click(&browser.find("#pq-list .pq-delete").await)
        .await;
    wait_for(
        &browser,
        "the query to be gone",
        "document.querySelector('#pq-list thead') && !document.querySelector('#pq-list tbody tr')",
    )
    .await;
    let listed = http_json(&format!("{base}/v1/persistent-queries")).await;
    assert_eq!(listed["queries"], json!([]), "{listed}");

    // --- reports: the continent report's graph, one line per continent.
    open(&browser, &base, "reports").await;
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let runs = browser
            .execute(
                "const s = document.querySelector('#report-chart svg'); return s ? Number(s.dataset.runs) : 0;",
            )
            .await;
        if runs.as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the report never showed two runs"
        );
        browser.click(&browser.find("#report-refresh").await).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lines = browser
        .execute(
            "return [...document.querySelectorAll('#report-chart polyline.series')].map(p => p.dataset.series).sort();",
        )
        .await;
    let (_, continents) = demo
        .query_json("SELECT DISTINCT continent_name FROM continent_data c, region_data r, load_info l WHERE l.georegion = r.id AND r.continent = c.continent ORDER BY continent_name")
        .await;
    let expected: Vec<Value> = continents["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(lines.as_array().unwrap(), &expected);
    let csv_link = browser
        .attribute(&browser.find("#report-csv").await, "href")
        .await
        .unwrap();
    assert!(
        csv_link.contains("/v1/reports/continent_hits/data.csv"),
        "{csv_link}"
    );
    screenshot(&browser, "reports").await;

    // --- alerts: the demo runs none here (an empty alerts directory).
    open(&browser, &base, "alerts").await;
    let status = wait_for(
        &browser,
        "the alerts status",
        "document.getElementById('alerts-status').textContent",
    )
    .await;
    assert_eq!(status, "0 active instances of 0 alerts");
    screenshot(&browser, "alerts").await;

    assert_no_console_errors(
        &browser,
        "the table, fleet, persistent-query, report and alert pages",
    )
    .await;
    browser.close().await;
}

/// The generation badge follows the thresholds the server gives in
/// `/v1/console/config`: with data older than them it turns amber, then red.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_badge_turns_amber_and_red_for_stale_data() {
    let driver = ChromeDriver::start().await;
    // Red must come after amber: the demo refuses `--console-red-after` <= amber.
    for (amber, red, level) in [("1ms", "1h", "amber"), ("1ms", "2ms", "red")] {
        let extra: Vec<OsString> = vec![
            "--console-amber-after".into(),
            amber.into(),
            "--console-red-after".into(),
            red.into(),
        ];
        let demo = TestDemo::start_with(2, 3, "2s", &extra).await;
        let base = demo.url();
        let config = http_json(&format!("{base}/v1/console/config")).await;
        assert_eq!(config["badge"]["amber_age_ms"], 1, "{config}");
        let profile = tempfile::tempdir().unwrap();
        let browser = driver.browser(profile.path()).await;
        open(&browser, &base, "query").await;
        let shown = wait_for(
            &browser,
            &format!("the badge to turn {level}"),
            &format!(
                "(() => {{ const b = document.getElementById('gen-badge');
                   return b.dataset.level === '{level}' && b.classList.contains('{level}')
                     && b.textContent.startsWith('generation ') && [b.textContent, getComputedStyle(b).backgroundColor]; }})()"
            ),
        )
        .await;
        let health = http_json(&format!("{base}/health")).await;
        let generation = &health["generation"];
        assert!(generation["id"].as_u64().unwrap() > 0, "{health}");
        let colour = shown[1].as_str().unwrap().to_string();
        assert!(
            !colour.is_empty() && colour != "rgba(0, 0, 0, 0)",
            "the {level} badge has no colour of its own: {shown}"
        );
        screenshot(&browser, &format!("badge-{level}")).await;
        assert_no_console_errors(&browser, &format!("the query page with a {level} badge")).await;
        browser.close().await;
    }
}

fn write_alert(dir: &std::path::Path, sql: &str) {
    let text = format!(
        "name = \"watched machines\"\nevery = \"300ms\"\nseverity = \"critical\"\n\
         procedure = \"Log in to the machine and check its disks.\"\nsql = \"{sql}\"\n"
    );
    // Written elsewhere and renamed: the service never reads half a file.
    let tmp = dir.join("watched.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("watched.toml")).unwrap();
}

/// The console's alerts view: an instance that fires appears without a
/// reload, acknowledging it updates the page, no data marks it stale, and
/// once it clears it is in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_view_is_live_acknowledges_and_keeps_history() {
    let alerts = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let extra: Vec<OsString> = vec![
        "--alerts-dir".into(),
        alerts.path().into(),
        "--alerts-state".into(),
        state.path().join("alerts.db").into(),
        "--alerts-poll".into(),
        "200ms".into(),
    ];
    let demo = TestDemo::start_with(2, 3, "2s", &extra).await;
    let base = demo.url();
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;

    open(&browser, &base, "alerts").await;
    wait_for(
        &browser,
        "the live stream",
        "document.getElementById('alerts-live').dataset.connected === 'true'",
    )
    .await;
    assert_eq!(
        browser.text(&browser.find("#alerts-status").await).await,
        "0 active instances of 0 alerts"
    );

    // The alert is deployed while the page is open: its instances arrive
    // over the stream.
    write_alert(
        alerts.path(),
        "SELECT ip ip_key, hostname FROM sys WHERE hostname LIKE '%-m000'",
    );
    let shown = wait_for(
        &browser,
        "two instances on the page",
        "(() => { const ids = [...document.querySelectorAll('#alerts-active .alert-instance')].map(c => c.dataset.id).sort(); return ids.length === 2 && ids; })()",
    )
    .await;
    let api = http_json(&format!("{base}/alerts/api/state")).await;
    let mut active: Vec<Value> = api["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "active")
        .map(|i| i["id"].clone())
        .collect();
    active.sort_by_key(|v| v.to_string());
    assert_eq!(shown.as_array().unwrap(), &active);
    let card = browser
        .text(&browser.find("#alerts-active .alert-instance").await)
        .await;
    assert!(
        card.contains("watched machines")
            && card.contains("critical")
            && card.contains("hostname: ")
            && card.contains("-m000")
            && card.contains("Log in to the machine and check its disks."),
        "details and procedure: {card}"
    );
    screenshot(&browser, "alerts-active").await;

    // Acknowledge the first: the page shows who, from the stream.
    let first = browser
        .execute("return document.querySelector('#alerts-active .alert-instance').dataset.id;")
        .await;
    let first_js = first.to_string();
    browser
        .click(
            &browser
                .find("#alerts-active .alert-instance button.ack")
                .await,
        )
        .await;
    let acked = wait_for(
        &browser,
        "the acknowledgement on the page",
        &format!(
            "(() => {{ const c = [...document.querySelectorAll('#alerts-active .alert-instance')].find(c => c.dataset.id === {first_js}); const a = c && c.querySelector('.acked'); return a && a.textContent; }})()"
        ),
    )
    .await;
    assert!(
        acked
            .as_str()
            .unwrap()
            .starts_with("acknowledged by console at "),
        "{acked}"
    );
    let api = http_json(&format!("{base}/alerts/api/state")).await;
    let instance = api["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == first)
        .unwrap()
        .clone();
    assert_eq!(instance["acked_by"], "console", "{instance}");
    assert_eq!(
        browser
            .execute("return document.querySelectorAll('#alerts-active button.ack').length;")
            .await,
        1,
        "the other instance is still to acknowledge"
    );

    // No data (the alert now reads a table nobody publishes): the
    // instances stay, marked stale.
    write_alert(
        alerts.path(),
        "SELECT ip ip_key, hostname FROM no_such_table",
    );
    wait_for(
        &browser,
        "both instances marked stale",
        "document.querySelectorAll('#alerts-active .alert-instance.stale .stale-mark').length === 2",
    )
    .await;
    let row = wait_for(
        &browser,
        "the alert's no-data state",
        "(() => { const r = document.querySelector('#alerts-table tbody tr'); return r && r.className === 'stale' && r.lastChild.textContent; })()",
    )
    .await;
    assert!(row.as_str().unwrap().starts_with("no data: "), "{row}");
    screenshot(&browser, "alerts-stale").await;

    // The rows vanish: both clear and move to the history.
    write_alert(
        alerts.path(),
        "SELECT ip ip_key, hostname FROM sys WHERE hostname = 'no such host'",
    );
    let history = wait_for(
        &browser,
        "two cleared instances in the history",
        "(() => { const rows = [...document.querySelectorAll('#alerts-history tbody tr')].map(tr => [...tr.children].map(td => td.textContent)); return rows.length === 2 && document.querySelectorAll('#alerts-active .alert-instance').length === 0 && rows; })()",
    )
    .await;
    let history = texts(&history);
    let api = http_json(&format!("{base}/alerts/api/history?limit=10")).await;
    let cleared = api["cleared"].as_array().unwrap();
    assert_eq!(cleared.len(), 2, "{api}");
    for (row, entry) in history.iter().zip(cleared) {
        assert_eq!(row[0], "watched machines");
        assert_eq!(row[1], "critical");
        assert!(
            row[2].contains(entry["key"]["ip_key"].as_str().unwrap()),
            "{row:?} vs {entry}"
        );
        assert!(
            !row[4].is_empty() && !row[5].is_empty(),
            "fired and cleared at: {row:?}"
        );
        assert!(entry["cleared_at_ms"].as_i64().unwrap() >= entry["fired_at_ms"].as_i64().unwrap());
        assert_eq!(row[6], entry["acked_by"].as_str().unwrap_or(""));
    }
    assert_eq!(
        history.iter().filter(|r| r[6] == "console").count(),
        1,
        "the acknowledged one says so: {history:?}"
    );
    assert_eq!(
        browser.text(&browser.find("#alerts-status").await).await,
        "0 active instances of 1 alerts"
    );
    screenshot(&browser, "alerts-history").await;
    assert_no_console_errors(&browser, "the alerts view").await;
    browser.close().await;
}

/// The report of the demo's own definition directory runs on a short
/// schedule, keeps rows, prunes by retention and serves CSV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_run_store_prune_and_download() {
    let reports = tempfile::tempdir().unwrap();
    let definition = std::fs::read_to_string(
        crate::fixture::repo_root().join("demo/reports/continent_hits.toml"),
    )
    .unwrap()
    .replace("every = \"1m\"", "every = \"300ms\"")
    .replace("retention = \"7d\"", "retention = \"2s\"");
    std::fs::write(reports.path().join("continent_hits.toml"), definition).unwrap();
    let extra: Vec<OsString> = vec!["--reports-dir".into(), reports.path().into()];
    let demo = TestDemo::start_with(2, 3, "1s", &extra).await;
    let base = demo.url();
    let list_url = format!("{base}/v1/reports");

    // Runs accumulate, then the first ones fall out of the 2 s retention.
    let first = loop_until(&list_url, |r| r["runs_kept"].as_u64().unwrap_or(0) >= 1).await;
    let first_oldest = first["oldest_run_ms"].as_i64().unwrap();
    let later = loop_until(&list_url, |r| {
        r["oldest_run_ms"].as_i64().unwrap_or(0) > first_oldest
    })
    .await;
    let kept_span =
        later["last_run_ms"].as_i64().unwrap() - later["oldest_run_ms"].as_i64().unwrap();
    assert!(
        kept_span <= 2000,
        "runs older than the retention are kept: {later}"
    );
    assert!(later["runs_kept"].as_u64().unwrap() >= 2, "{later}");
    assert_eq!(later["last_error"], Value::Null, "{later}");

    // A run now: its rows are the continent query's rows of its generation.
    let run: Value = reqwest::Client::new()
        .post(format!("{base}/v1/reports/continent_hits/run"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["error"], Value::Null, "{run}");
    let continents: Vec<&str> = run["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert!(continents.len() >= 2, "{run}");
    let (_, api) = demo
        .query_json("SELECT count(DISTINCT c.continent_name) n FROM load_info l, region_data r, continent_data c WHERE l.georegion=r.id AND r.continent=c.continent")
        .await;
    assert_eq!(continents.len() as u64, api["rows"][0][0].as_u64().unwrap());

    // Stored runs and the CSV over the same closed range agree line for line.
    let until = run["run_at_ms"].as_i64().unwrap() + 1;
    let since = until - 1000;
    let range = format!("since_ms={since}&until_ms={until}");
    let stored = http_json(&format!("{base}/v1/reports/continent_hits/runs?{range}")).await;
    let runs = stored["runs"].as_array().unwrap();
    assert!(runs.len() >= 2, "{stored}");
    let rows: usize = runs
        .iter()
        .map(|r| r["rows"].as_array().unwrap().len())
        .sum();
    let response = reqwest::get(format!("{base}/v1/reports/continent_hits/data.csv?{range}"))
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "run_at,generation_id,continent_name,hits");
    assert_eq!(lines.len() - 1, rows, "{csv}");
    let last_run_rows = &runs.last().unwrap()["rows"];
    let last_line = lines.last().unwrap();
    let last_row = last_run_rows.as_array().unwrap().last().unwrap();
    assert!(
        last_line.ends_with(&format!(
            ",{},{}",
            cell_text(&last_row[0]),
            cell_text(&last_row[1])
        )),
        "{last_line} vs {last_row}"
    );

    // An unknown report is a 404 with a hint.
    let missing = reqwest::get(format!("{base}/v1/reports/nope/data.csv"))
        .await
        .unwrap();
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert!(body["hint"].as_str().unwrap().contains("/v1/reports"));
}

/// Polls the report list until the continent report satisfies `done`.
async fn loop_until(url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = http_json(url).await;
        let report = list["reports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "continent_hits")
            .cloned()
            .expect("continent_hits is listed");
        if done(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "report never got there: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With a users file the console is behind a log-in: the page sends the
/// browser to the form, the right password opens the console, whose
/// query (a POST) carries the session's CSRF token without the page
/// asking for it, and logging out brings the form back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_logs_in_and_its_requests_carry_the_csrf_token() {
    use std::collections::BTreeMap;
    use std::io::Write;

    use crate::tiers::{FleetSpec, TestCluster};

    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let mut add = Command::new(BINARY)
        .args([
            "users",
            "add",
            "olga",
            "--role",
            "operator",
            "--password-stdin",
        ])
        .arg("--file")
        .arg(&users)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"olga's secret\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let entry = fleetsql_tiers::SqlNodeEntry {
        users: Some(users),
        ..fleetsql_tiers::SqlNodeEntry::default()
    };
    let cluster = TestCluster::start_fleet_in(
        dir,
        FleetSpec {
            proxies: 1,
            tlas: 1,
            table_expiry: Duration::from_secs(600),
            extra_agent: false,
            sqlnodes: BTreeMap::from([("sql".to_string(), entry)]),
            tla_sql: Default::default(),
        },
    )
    .await;
    let base = cluster.sql_url();
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;

    browser.goto(&format!("{base}/#query")).await;
    wait_for(
        &browser,
        "the log-in form",
        "location.pathname === '/login' && document.getElementById('login-password')",
    )
    .await;
    let user = browser.find("#login-user").await;
    browser.send_keys(&user, "olga").await;
    let password = browser.find("#login-password").await;
    browser.send_keys(&password, "wrong").await;
    browser.click(&browser.find("#login-submit").await).await;
    let refused = wait_for(
        &browser,
        "the refusal",
        "!document.getElementById('login-error').hidden && document.getElementById('login-error').textContent",
    )
    .await;
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("password authentication failed"),
        "{refused}"
    );
    browser.clear(&password).await;
    browser.send_keys(&password, "olga's secret").await;
    browser.click(&browser.find("#login-submit").await).await;
    let shown = wait_for(
        &browser,
        "the console with its user",
        "document.body.dataset.ready === 'true' && !document.getElementById('session').hidden && document.getElementById('session-user').textContent",
    )
    .await;
    assert_eq!(shown, "olga (operator)");

    let editor = browser.find("#sql-input").await;
    browser.clear(&editor).await;
    browser.send_keys(&editor, "SELECT 41 + 1 AS answer").await;
    browser.click(&browser.find("#run").await).await;
    let rows = wait_for(&browser, "the query's answer", RESULT_ROWS).await;
    assert_eq!(texts(&rows), vec![vec!["42".to_string()]]);
    screenshot(&browser, "console-logged-in").await;

    browser.click(&browser.find("#logout").await).await;
    wait_for(
        &browser,
        "the log-in form again",
        "location.pathname === '/login' && document.getElementById('login-form')",
    )
    .await;
    // The ended session opens nothing: back on the console, the page is
    // sent to the form again.
    browser.goto(&format!("{base}/#query")).await;
    wait_for(
        &browser,
        "the log-in form after log-out",
        "location.pathname === '/login'",
    )
    .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_after_the_first_rows_shows_as_an_error() {
    // The node's time-out ends an endless answer after its first rows: the
    // status is 200, the error is at the end of the JSON object.
    let demo = TestDemo::start_with(2, 3, "1s", &["--query-timeout".into(), "3s".into()]).await;
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;
    open(&browser, &demo.url(), "query").await;
    let editor = browser.find("#sql-input").await;
    browser.clear(&editor).await;
    browser
        .send_keys(
            &editor,
            "SELECT a.pid FROM processes a, processes b, processes c, processes d, processes e",
        )
        .await;
    browser.click(&browser.find("#run").await).await;
    let error = wait_for(
        &browser,
        "the query's error",
        "!document.getElementById('query-error').hidden && document.getElementById('query-error').textContent",
    )
    .await;
    let error = error.as_str().unwrap_or_default().to_string();
    assert!(error.contains("57014"), "{error}");
    assert!(error.contains("rows"), "{error}");
}
