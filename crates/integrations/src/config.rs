//! The integrations file (TOML): one array of tables per kind.
//!
//! Unknown keys are refused at the top level only: serde cannot refuse them
//! in tables that flatten shared parts (broker, retry).
//!
//! ```toml
//! [health]
//! publish_every = "5s"
//!
//! [[prometheus]]
//! name = "node"
//! url = "http://127.0.0.1:9100/metrics"
//! interval = "15s"
//!
//! [[mqtt_sink]]
//! name = "broker"
//! host = "127.0.0.1"
//! port = 8883
//! tls = true
//! ca_file = "/etc/fleetsql/mqtt-ca.pem"
//! topic_prefix = "fleetsql/pq"
//! qos = 1
//!
//! [[mqtt_source]]
//! name = "sensors"
//! host = "127.0.0.1"
//! port = 1883
//! topics = ["sensors/#"]
//! stream = "sensor"
//!
//! [[snmp]]
//! name = "switch1"
//! host = "10.1.2.3:161"
//! community = "public"
//! tables = ["ifTable"]
//!
//! [[xmpp_sink]]
//! name = "xmpp"
//! host = "127.0.0.1"
//! jid = "fleetsql@example.net"
//! password = "secret"
//! ca_file = "/etc/fleetsql/xmpp-ca.pem"
//! pubsub_service = "pubsub.example.net"
//!
//! [[xmpp_source]]
//! name = "alarms"
//! host = "127.0.0.1"
//! jid = "fleetsql@example.net"
//! password = "secret"
//! stream = "alarm"
//! nodes = [{ node = "alarms/site1" }, { service = "pubsub.other.net", node = "x" }]
//!
//! [[esmond]]
//! name = "ps"
//! archives = ["http://127.0.0.1:8085/esmond/perfsonar/archive/"]
//! event_types = ["throughput", "packet-loss-rate"]
//! interval = "60s"
//! ```

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{IntegrationError, Result};

/// Every integration of one process.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationsConfig {
    /// How the `fleet_sources` table is kept.
    #[serde(default)]
    pub health: HealthConfig,
    /// Prometheus exposition scrapes, each publishing its metric families as tables.
    #[serde(default)]
    pub prometheus: Vec<PrometheusConfig>,
    /// MQTT brokers receiving every persistent query's results.
    #[serde(default)]
    pub mqtt_sink: Vec<MqttSinkConfig>,
    /// MQTT subscriptions whose messages become events of a stream.
    #[serde(default)]
    pub mqtt_source: Vec<MqttSourceConfig>,
    /// perfSONAR esmond archives polled for measurements.
    #[serde(default)]
    pub esmond: Vec<EsmondConfig>,
    /// SNMP devices whose tables are published.
    #[serde(default)]
    pub snmp: Vec<SnmpConfig>,
    /// XMPP pubsub (XEP-0060) services receiving persistent queries' results.
    #[serde(default)]
    pub xmpp_sink: Vec<XmppSinkConfig>,
    /// XMPP pubsub subscriptions whose items become events of a stream.
    #[serde(default)]
    pub xmpp_source: Vec<XmppSourceConfig>,
}

/// `fleet_sources` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Longest time between two publications of `fleet_sources` (it is
    /// also republished at once after every change, at most this often).
    #[serde(default = "default_health_every", deserialize_with = "duration")]
    pub publish_every: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            publish_every: default_health_every(),
        }
    }
}

fn default_health_every() -> Duration {
    Duration::from_secs(1)
}

/// Retry settings every integration shares: after `n` failures in a row it
/// waits `retry_min * 2^(n-1)`, at most `retry_max`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Retry {
    /// First wait after a failure.
    #[serde(default = "default_retry_min", deserialize_with = "duration")]
    pub retry_min: Duration,
    /// Longest wait.
    #[serde(default = "default_retry_max", deserialize_with = "duration")]
    pub retry_max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
        }
    }
}

impl Retry {
    /// The wait after `failures` failures in a row (none after none).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.retry_min.saturating_mul(factor).min(self.retry_max)
    }
}

fn default_retry_min() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}

/// One Prometheus scrape target.
#[derive(Debug, Clone, Deserialize)]
pub struct PrometheusConfig {
    /// Source name (`job` column, `fleet_sources.name`).
    pub name: String,
    /// The exposition URL, e.g. `http://127.0.0.1:9100/metrics`.
    pub url: String,
    /// Time between scrapes.
    #[serde(default = "default_scrape_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// Per-scrape time-out.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Put before every table name, e.g. `prom_`.
    #[serde(default)]
    pub table_prefix: String,
    /// Only families whose name starts with one of these (all when empty).
    #[serde(default)]
    pub families: Vec<String>,
    /// Retries.
    #[serde(flatten)]
    pub retry: Retry,
}

fn default_scrape_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where an MQTT connection goes.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttBroker {
    /// Broker host.
    pub host: String,
    /// Broker port.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Client id (defaults to `fleetsql-<name>-<pid>`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, when the broker asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive", deserialize_with = "duration")]
    pub keep_alive: Duration,
    /// Connect over TLS (the broker's TLS listener, usually port 8883);
    /// the certificate is always verified.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CAs to trust (the system's by default).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Name the broker's certificate must carry (`host` by default).
    #[serde(default)]
    pub tls_server_name: Option<String>,
}

fn default_mqtt_port() -> u16 {
    1883
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

/// Persistent-query results to MQTT.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttSinkConfig {
    /// Sink name.
    pub name: String,
    /// The broker.
    #[serde(flatten)]
    pub broker: MqttBroker,
    /// Results of query `id` go to `{topic_prefix}/{id}`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// MQTT QoS 0, 1 or 2. At 1 and 2, publishes not acknowledged when
    /// the connection drops are sent again after the reconnect.
    #[serde(default)]
    pub qos: u8,
    /// Retries.
    #[serde(flatten)]
    pub retry: Retry,
}

fn default_topic_prefix() -> String {
    "fleetsql/pq".to_string()
}

/// MQTT messages to events.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttSourceConfig {
    /// Source name.
    pub name: String,
    /// The broker.
    #[serde(flatten)]
    pub broker: MqttBroker,
    /// Topic filters to subscribe to.
    pub topics: Vec<String>,
    /// The stream the messages' JSON objects become events of.
    pub stream: String,
    /// Subscription QoS.
    #[serde(default)]
    pub qos: u8,
    /// Retries.
    #[serde(flatten)]
    pub retry: Retry,
}

/// An XMPP account and how to reach and trust its server. The connection
/// is always secured with STARTTLS and the server's certificate verified.
#[derive(Debug, Clone, Deserialize)]
pub struct XmppServer {
    /// Server host.
    pub host: String,
    /// Client-to-server port.
    #[serde(default = "default_xmpp_port")]
    pub port: u16,
    /// Bare JID to log in as, `user@domain`.
    pub jid: String,
    /// Its password.
    pub password: String,
    /// Resource to bind (defaults to `fleetsql-<name>`).
    #[serde(default)]
    pub resource: Option<String>,
    /// PEM file of the CAs to trust (the system's by default).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Name the server's certificate must carry (the JID's domain by default).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Limit for connecting and for every answer awaited.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Whitespace keep-alive period.
    #[serde(default = "default_keep_alive", deserialize_with = "duration")]
    pub keep_alive: Duration,
}

impl XmppServer {
    /// The JID's domain.
    pub fn domain(&self) -> &str {
        self.jid.split_once('@').map_or(&self.jid, |(_, d)| d)
    }

    /// `pubsub.<domain>`, the usual pubsub service.
    pub fn default_pubsub(&self) -> String {
        format!("pubsub.{}", self.domain())
    }
}

fn default_xmpp_port() -> u16 {
    5222
}

/// Persistent-query results to XMPP pubsub nodes.
#[derive(Debug, Clone, Deserialize)]
pub struct XmppSinkConfig {
    /// Sink name; registrations ask for it with `"sinks": [name]`.
    pub name: String,
    /// The account.
    #[serde(flatten)]
    pub server: XmppServer,
    /// Pubsub service JID (`pubsub.<domain>` by default).
    #[serde(default)]
    pub pubsub_service: Option<String>,
    /// Results of query `id` go to node `{node_prefix}/{id}`.
    #[serde(default = "default_topic_prefix")]
    pub node_prefix: String,
    /// Give every registration a node, not only those that ask.
    #[serde(default)]
    pub all_queries: bool,
    /// Retries.
    #[serde(flatten)]
    pub retry: Retry,
}

/// One pubsub node to subscribe to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XmppNode {
    /// Pubsub service JID (`pubsub.<domain>` by default).
    #[serde(default)]
    pub service: Option<String>,
    /// Node name.
    pub node: String,
}

/// XMPP pubsub items to events.
#[derive(Debug, Clone, Deserialize)]
pub struct XmppSourceConfig {
    /// Source name.
    pub name: String,
    /// The account.
    #[serde(flatten)]
    pub server: XmppServer,
    /// Nodes to subscribe to.
    pub nodes: Vec<XmppNode>,
    /// The stream the items' JSON payloads become events of.
    pub stream: String,
    /// Retries.
    #[serde(flatten)]
    pub retry: Retry,
}

/// A perfSONAR esmond poller.
#[derive(Debug, Clone, Deserialize)]
pub struct EsmondConfig {
    /// Source name.
    pub name: String,
    /// Archive roots, e.g. `http://ps.example.net/esmond/perfsonar/archive/`.
    pub archives: Vec<String>,
    /// Only measurements from this source address or name.
    #[serde(default)]
    pub source: Option<String>,
    /// Only measurements to this destination.
    #[serde(default)]
    pub destination: Option<String>,
    /// Event types to fetch (esmond names, e.g. `throughput`, `packet-loss-rate`,
    /// `histogram-owdelay`).
    #[serde(default = "default_event_types")]
    pub event_types: Vec<String>,
    /// Time between polls.
    #[serde(default = "default_esmond_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// How far back the first poll reaches.
    #[serde(default = "default_lookback", deserialize_with = "duration")]
    pub lookback: Duration,
    /// Per-request time-out.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Retries.
    #[serde(flatten)]
    pub retry: Retry,
}

fn default_event_types() -> Vec<String> {
    ["throughput", "packet-loss-rate", "histogram-owdelay"]
        .map(String::from)
        .to_vec()
}
fn default_esmond_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_lookback() -> Duration {
    Duration::from_secs(3600)
}

/// One SNMP device (v2c, or v3 with a USM user).
#[derive(Debug, Clone, Deserialize)]
pub struct SnmpConfig {
    /// Device name (`device` column, `fleet_sources.name`).
    pub name: String,
    /// `host:port` of the device's agent (UDP), e.g. `10.1.2.3:161`.
    pub host: String,
    /// Community string (v2c).
    #[serde(default = "default_community")]
    pub community: String,
    /// `2c` (community) or `3` (USM user).
    #[serde(default = "default_snmp_version")]
    pub version: String,
    /// v3 user name.
    #[serde(default)]
    pub user: Option<String>,
    /// v3 authentication protocol; `SHA` (HMAC-SHA-96) is supported.
    #[serde(default)]
    pub auth_protocol: Option<String>,
    /// v3 authentication password (authNoPriv when alone).
    #[serde(default)]
    pub auth_password: Option<String>,
    /// v3 privacy protocol; `AES` (AES-128 CFB) is supported.
    #[serde(default)]
    pub priv_protocol: Option<String>,
    /// v3 privacy password (authPriv; needs `auth_password`).
    #[serde(default)]
    pub priv_password: Option<String>,
    /// Tables to walk: `ifTable`, `ifXTable` or a dotted table OID.
    #[serde(default = "default_snmp_tables")]
    pub tables: Vec<String>,
    /// Put before every table name.
    #[serde(default = "default_snmp_prefix")]
    pub table_prefix: String,
    /// Time between polls.
    #[serde(default = "default_esmond_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// Per-request time-out.
    #[serde(default = "default_snmp_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Retries.
    #[serde(flatten)]
    pub retry: Retry,
}

fn default_snmp_version() -> String {
    "2c".to_string()
}
fn default_community() -> String {
    "public".to_string()
}
fn default_snmp_tables() -> Vec<String> {
    vec!["ifTable".to_string()]
}
fn default_snmp_prefix() -> String {
    "snmp_".to_string()
}
fn default_snmp_timeout() -> Duration {
    Duration::from_secs(3)
}

impl IntegrationsConfig {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| IntegrationError::ConfigIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            IntegrationError::Config(m) => {
                IntegrationError::Config(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: IntegrationsConfig =
            toml::from_str(text).map_err(|e| IntegrationError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        let all = self
            .prometheus
            .iter()
            .map(|p| &p.name)
            .chain(self.mqtt_sink.iter().map(|p| &p.name))
            .chain(self.mqtt_source.iter().map(|p| &p.name))
            .chain(self.esmond.iter().map(|p| &p.name))
            .chain(self.snmp.iter().map(|p| &p.name))
            .chain(self.xmpp_sink.iter().map(|p| &p.name))
            .chain(self.xmpp_source.iter().map(|p| &p.name));
        for name in all {
            if name.is_empty() {
                return Err(IntegrationError::Config(
                    "every integration needs a non-empty `name`".into(),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(IntegrationError::Config(format!(
                    "two integrations are named `{name}`; names must be unique"
                )));
            }
        }
        for p in &self.prometheus {
            if !p.url.starts_with("http://") {
                return Err(IntegrationError::Config(format!(
                    "prometheus `{}`: url `{}` must start with http://",
                    p.name, p.url
                )));
            }
        }
        for (name, qos) in self
            .mqtt_sink
            .iter()
            .map(|s| (&s.name, s.qos))
            .chain(self.mqtt_source.iter().map(|s| (&s.name, s.qos)))
        {
            if qos > 2 {
                return Err(IntegrationError::Config(format!(
                    "mqtt `{name}`: qos {qos} is not 0, 1 or 2"
                )));
            }
        }
        for s in &self.mqtt_source {
            if s.topics.is_empty() {
                return Err(IntegrationError::Config(format!(
                    "mqtt_source `{}`: list at least one topic in `topics`",
                    s.name
                )));
            }
        }
        for (name, server) in self
            .xmpp_sink
            .iter()
            .map(|s| (&s.name, &s.server))
            .chain(self.xmpp_source.iter().map(|s| (&s.name, &s.server)))
        {
            let valid = server.jid.split_once('@').is_some_and(|(user, domain)| {
                !user.is_empty() && !domain.is_empty() && !domain.contains('/')
            });
            if !valid {
                return Err(IntegrationError::Config(format!(
                    "xmpp `{name}`: jid `{}` must be a bare JID, user@domain",
                    server.jid
                )));
            }
        }
        for s in &self.xmpp_source {
            if s.nodes.is_empty() {
                return Err(IntegrationError::Config(format!(
                    "xmpp_source `{}`: list at least one node in `nodes`",
                    s.name
                )));
            }
        }
        for s in &self.snmp {
            let fail = |why: String| {
                Err(IntegrationError::Config(format!(
                    "snmp `{}`: {why}",
                    s.name
                )))
            };
            match s.version.as_str() {
                "2c" => {}
                "3" => {
                    if s.user.as_deref().is_none_or(str::is_empty) {
                        return fail("version 3 needs `user`".into());
                    }
                    if s.auth_password.is_none() {
                        return fail(
                            "version 3 needs `auth_password` (noAuthNoPriv is not offered)".into(),
                        );
                    }
                    for p in [&s.auth_password, &s.priv_password].into_iter().flatten() {
                        if p.len() < 8 {
                            return fail("SNMPv3 passwords have at least 8 characters".into());
                        }
                    }
                    if let Some(p) = s
                        .auth_protocol
                        .as_deref()
                        .filter(|p| !p.eq_ignore_ascii_case("sha"))
                    {
                        return fail(format!("auth_protocol `{p}` is not supported; use SHA"));
                    }
                    if let Some(p) = s
                        .priv_protocol
                        .as_deref()
                        .filter(|p| !p.eq_ignore_ascii_case("aes"))
                    {
                        return fail(format!("priv_protocol `{p}` is not supported; use AES"));
                    }
                }
                other => return fail(format!("version `{other}` is not 2c or 3")),
            }
        }
        for e in &self.esmond {
            if e.archives.is_empty() {
                return Err(IntegrationError::Config(format!(
                    "esmond `{}`: list at least one archive URL in `archives`",
                    e.name
                )));
            }
        }
        Ok(())
    }

    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.prometheus.is_empty()
            && self.mqtt_sink.is_empty()
            && self.mqtt_source.is_empty()
            && self.esmond.is_empty()
            && self.snmp.is_empty()
            && self.xmpp_sink.is_empty()
            && self.xmpp_source.is_empty()
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    fleetsql_model::duration::parse_positive(text)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let c = IntegrationsConfig::parse(
            r#"
            [[prometheus]]
            name = "node"
            url = "http://127.0.0.1:9100/metrics"
            interval = "500ms"
            retry_min = "100ms"

            [[mqtt_sink]]
            name = "b"
            host = "127.0.0.1"
            qos = 2
            "#,
        )
        .unwrap();
        assert_eq!(c.prometheus[0].interval, Duration::from_millis(500));
        assert_eq!(c.prometheus[0].retry.retry_min, Duration::from_millis(100));
        assert_eq!(c.mqtt_sink[0].broker.port, 1883);
        assert_eq!(c.mqtt_sink[0].topic_prefix, "fleetsql/pq");
    }

    #[test]
    fn parses_xmpp_sink_and_source() {
        let c = IntegrationsConfig::parse(
            r#"
            [[xmpp_sink]]
            name = "x"
            host = "127.0.0.1"
            jid = "bot@example.net"
            password = "pw"
            ca_file = "/tmp/ca.pem"

            [[xmpp_source]]
            name = "alarms"
            host = "127.0.0.1"
            port = 5223
            jid = "bot@example.net"
            password = "pw"
            stream = "alarm"
            nodes = [{ node = "a" }, { service = "ps.example.org", node = "b" }]
            "#,
        )
        .unwrap();
        let sink = &c.xmpp_sink[0];
        assert_eq!(sink.server.port, 5222);
        assert_eq!(sink.server.default_pubsub(), "pubsub.example.net");
        assert_eq!(sink.node_prefix, "fleetsql/pq");
        assert!(!sink.all_queries);
        let source = &c.xmpp_source[0];
        assert_eq!(source.nodes[1].service.as_deref(), Some("ps.example.org"));
        assert_eq!(source.server.port, 5223);
    }

    #[test]
    fn refuses_mistakes_with_a_reason() {
        for (text, needle) in [
            ("[[prometheus]]\nname='a'\nurl='ftp://x'", "http://"),
            ("[[mqtt_sink]]\nname='a'\nhost='h'\nqos=3", "qos 3"),
            (
                "[[prometheus]]\nname='a'\nurl='http://x'\n[[mqtt_sink]]\nname='a'\nhost='h'",
                "unique",
            ),
            (
                "[[prometheus]]\nname='a'\nurl='http://x'\ninterval='5 parsecs'",
                "unit",
            ),
            ("[[bogus]]\nname='a'", "unknown field"),
            (
                "[[xmpp_sink]]\nname='x'\nhost='h'\njid='nodomain'\npassword='p'",
                "bare JID",
            ),
            (
                "[[xmpp_source]]\nname='x'\nhost='h'\njid='a@b'\npassword='p'\nstream='s'\nnodes=[]",
                "at least one node",
            ),
        ] {
            let e = IntegrationsConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry {
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
        };
        let delays: Vec<_> = (0..6).map(|n| r.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1000]);
    }
}
