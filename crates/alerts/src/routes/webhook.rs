use std::time::Duration;

use serde_json::Value;

/// POSTs `payload` as JSON; retries a failed POST `retries` times, waiting
/// `backoff`, then twice that, and so on. The payload's `id` goes in an
/// `Idempotency-Key` header so a receiver can drop a retried duplicate.
pub async fn post_webhook(
    http: &reqwest::Client,
    url: &str,
    payload: &Value,
    retries: u32,
    backoff: Duration,
) -> Result<(), String> {
    let key = payload
        .get("id")
        .map(|id| format!("fleetsql-alert-{id}"))
        .unwrap_or_default();
    let mut wait = backoff;
    let mut last_error = String::new();
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
        let sent = http
            .post(url)
            .header("idempotency-key", &key)
            .json(payload)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => {
                last_error = format!("{url} answered {}", response.status());
                if response.status().is_client_error()
                    && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    // The receiver refuses this payload; retrying will not help.
                    break;
                }
            }
            Err(e) => last_error = format!("POST {url} failed: {e}"),
        }
        tracing::debug!(url, attempt, error = %last_error, "webhook attempt failed");
    }
    Err(last_error)
}
