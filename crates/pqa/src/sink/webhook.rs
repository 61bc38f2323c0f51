//! Webhook sink: POSTs each notification as JSON, retrying with exponential backoff.

use std::time::Duration;

use async_trait::async_trait;

use super::Sink;
use crate::error::{PqaError, Result};
use crate::topic::Notification;

/// POSTs notifications to an HTTP endpoint.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    url: String,
    client: reqwest::Client,
    /// Tries per notification (first try included).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled each retry, capped at 10 s.
    pub backoff: Duration,
}

impl WebhookSink {
    /// A webhook to `url` (http or https).
    pub fn new(url: &str) -> Result<Self> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(PqaError::BadRequest(format!(
                "webhook must be an http(s) URL, got {url}"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PqaError::Sink {
                sink: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(WebhookSink {
            url: url.to_string(),
            client,
            max_attempts: 5,
            backoff: Duration::from_millis(200),
        })
    }
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> String {
        self.url.clone()
    }

    async fn deliver(&self, _n: &Notification, json: &str) -> Result<()> {
        let mut wait = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.max_attempts.max(1) {
            let res = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(json.to_string())
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => return Ok(()),
                // A 4xx other than 408/429 will not get better by retrying.
                Ok(r) if r.status().is_client_error() && r.status() != 408 && r.status() != 429 => {
                    return Err(PqaError::Sink {
                        sink: self.url.clone(),
                        message: format!("HTTP {}", r.status()),
                    });
                }
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            if attempt < self.max_attempts {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
        Err(PqaError::Sink {
            sink: self.url.clone(),
            message: format!("gave up after {} attempts: {last}", self.max_attempts),
        })
    }
}
