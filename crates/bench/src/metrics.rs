//! Reading the tiers' Prometheus `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One scrape: metric name → sum over its label sets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrape {
    values: BTreeMap<String, f64>,
}

impl Scrape {
    pub(crate) fn parse(text: &str) -> Scrape {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            *values.entry(name.to_string()).or_insert(0.0) += value;
        }
        Scrape { values }
    }

    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    pub(crate) fn or_zero(&self, name: &str) -> f64 {
        self.get(name).unwrap_or(0.0)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct MetricsClient {
    http: reqwest::Client,
    url: String,
}

impl MetricsClient {
    pub(crate) fn new(addr: SocketAddr) -> MetricsClient {
        MetricsClient::over(addr, None)
    }

    /// Over HTTPS with `tls` (a node with a certificate serves only that).
    pub(crate) fn over(
        addr: SocketAddr,
        tls: Option<tokio_rustls::rustls::ClientConfig>,
    ) -> MetricsClient {
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let (builder, scheme) = match tls {
            Some(config) => (builder.use_preconfigured_tls(config), "https"),
            None => (builder, "http"),
        };
        MetricsClient {
            http: builder.build().unwrap_or_default(),
            url: format!("{scheme}://{addr}/metrics"),
        }
    }

    pub(crate) async fn scrape(&self) -> Option<Scrape> {
        let response = self.http.get(&self.url).send().await.ok()?;
        let text = response.error_for_status().ok()?.text().await.ok()?;
        Some(Scrape::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_label_sets_and_skips_comments() {
        let s = Scrape::parse(
            "# HELP x y\n# TYPE x gauge\nx{a=\"1\"} 2\nx{a=\"2\"} 3.5\ny 7\nbroken line\n",
        );
        assert_eq!(s.get("x"), Some(5.5));
        assert_eq!(s.get("y"), Some(7.0));
        assert_eq!(s.get("broken"), None);
    }
}
