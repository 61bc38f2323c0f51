//! The few W3C WebDriver commands the console test needs, over reqwest.
//! (A WebDriver client crate would pull proc-macro features into the
//! shared build that recompile DataFusion; this needs nothing new.)

use base64::Engine;
use serde_json::{Value, json};

/// The key W3C assigns to an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
pub(crate) const CONTROL: char = '\u{E009}';
pub(crate) const ENTER: char = '\u{E007}';
/// Releases held modifier keys.
pub(crate) const NULL_KEY: char = '\u{E000}';

#[derive(Debug)]
pub(crate) struct Browser {
    http: reqwest::Client,
    session_url: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Element(String);

impl Browser {
    /// A new session on the WebDriver server at `driver_url`.
    pub(crate) async fn start(driver_url: &str, capabilities: Value) -> Browser {
        let http = reqwest::Client::new();
        let answer: Value = http
            .post(format!("{driver_url}/session"))
            .json(&json!({ "capabilities": { "alwaysMatch": capabilities } }))
            .send()
            .await
            .expect("WebDriver answers")
            .json()
            .await
            .expect("WebDriver answers JSON");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        Browser {
            http,
            session_url: format!("{driver_url}/session/{session}"),
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("WebDriver answers");
        let status = response.status();
        let answer: Value = response.json().await.expect("WebDriver answers JSON");
        assert!(
            status.is_success(),
            "WebDriver {method} {path} failed: {status} {answer}"
        );
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub(crate) async fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    async fn find_by(&self, using: &str, value: &str) -> Option<Element> {
        let response = self
            .http
            .post(format!("{}/element", self.session_url))
            .json(&json!({ "using": using, "value": value }))
            .send()
            .await
            .expect("WebDriver answers");
        if !response.status().is_success() {
            return None;
        }
        let answer: Value = response.json().await.expect("WebDriver answers JSON");
        answer["value"][ELEMENT_KEY]
            .as_str()
            .map(|id| Element(id.to_string()))
    }

    /// The element `css` selects; panics naming it when there is none.
    pub(crate) async fn find(&self, css: &str) -> Element {
        self.find_by("css selector", css)
            .await
            .unwrap_or_else(|| panic!("no element matches {css}"))
    }

    pub(crate) async fn find_xpath(&self, xpath: &str) -> Element {
        self.find_by("xpath", xpath)
            .await
            .unwrap_or_else(|| panic!("no element matches {xpath}"))
    }

    pub(crate) async fn click(&self, element: &Element) {
        self.post(&format!("/element/{}/click", element.0), json!({}))
            .await;
    }

    pub(crate) async fn clear(&self, element: &Element) {
        self.post(&format!("/element/{}/clear", element.0), json!({}))
            .await;
    }

    pub(crate) async fn send_keys(&self, element: &Element, text: &str) {
        self.post(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// The element's rendered text.
    pub(crate) async fn text(&self, element: &Element) -> String {
        self.get(&format!("/element/{}/text", element.0))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub(crate) async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.get(&format!("/element/{}/attribute/{name}", element.0))
            .await
            .as_str()
            .map(str::to_string)
    }

    /// The viewport as PNG.
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.get("/screenshot").await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("screenshot is base64"))
            .expect("screenshot is base64")
    }

    /// Browser console entries since the last call (chromedriver's log
    /// endpoint; needs `goog:loggingPrefs` `{"browser": "ALL"}`).
    pub(crate) async fn console_log(&self) -> Vec<Value> {
        self.post("/se/log", json!({ "type": "browser" }))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) async fn close(self) {
        self.command(reqwest::Method::DELETE, "", None).await;
    }
}
