//! Webhook sink: POSTs each notification as JSON, retrying with exponential backoff.
//!
//! A webhook URL comes from whoever registers a query, and the node calls
//! it from inside the fleet: left unchecked it reaches what the client
//! cannot (the agent's loopback publish API at `127.0.0.1:7070`, cloud
//! metadata at `169.254.169.254`, private services). So a webhook must be
//! `http(s)` and, unless the operator allows its host
//! ([`WebhookPolicy::allowing`]), every address it resolves to must be
//! public. The check runs at registration and again at every connection
//! (the client's resolver), so a name that later resolves elsewhere (DNS
//! rebinding) and redirects to other hosts are refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;

use super::Sink;
use crate::error::{PqaError, Result};
use crate::topic::Notification;

/// Redirects a webhook may follow, each checked like the URL itself.
const MAX_REDIRECTS: usize = 5;

/// Which hosts webhooks may reach.
///
/// By default only public addresses: loopback, private (RFC 1918, unique
/// local), link-local, shared (CGNAT), unspecified, multicast and reserved
/// addresses are refused. Hosts on the allowlist (names or IP addresses,
/// as written in the URL or as resolved) are allowed whatever they resolve to.
#[derive(Debug, Clone, Default)]
pub struct WebhookPolicy {
    allow: Arc<Vec<String>>,
}

impl WebhookPolicy {
    /// A policy that also allows `hosts` (names compared case-insensitively,
    /// IP addresses as parsed, IPv6 with or without brackets).
    pub fn allowing(hosts: &[String]) -> Self {
        let allow = hosts.iter().map(|h| normalize_host(h)).collect();
        WebhookPolicy {
            allow: Arc::new(allow),
        }
    }

    fn allowed_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.allow.contains(&host)
    }

    /// Whether a connection to `ip`, reached through the name `host`, is allowed.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        is_public(ip) || self.allowed_host(host) || self.allowed_host(&ip.to_string())
    }

    /// The checks that need no name resolution: an `http(s)` URL with a
    /// host, and a host that is an allowed address or a name that is not
    /// `localhost`.
    pub fn check_url(&self, url: &str) -> Result<Url> {
        let refuse = |rule: String| PqaError::WebhookRefused {
            url: url.chars().take(200).collect(),
            rule,
        };
        let parsed = Url::parse(url).map_err(|e| refuse(format!("not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(refuse(format!(
                "only http and https webhooks are allowed, not `{}`",
                parsed.scheme()
            )));
        }
        // The URL parser has already normalised IPv4 forms such as
        // `2130706433` and `0x7f.1` to dotted quads.
        let Some(host_text) = parsed.host_str().map(str::to_string) else {
            return Err(refuse("the URL has no host".to_string()));
        };
        match literal_ip(&host_text) {
            Some(ip) => self.check_ip(&host_text, ip, &refuse)?,
            None => {
                let name = host_text.trim_end_matches('.').to_ascii_lowercase();
                if (name == "localhost" || name.ends_with(".localhost"))
                    && !self.allowed_host(&host_text)
                {
                    return Err(refuse(format!(
                        "`{host_text}` is a loopback name; {ALLOW_HINT}"
                    )));
                }
            }
        }
        Ok(parsed)
    }

    fn check_ip(&self, host: &str, ip: IpAddr, refuse: &dyn Fn(String) -> PqaError) -> Result<()> {
        if self.allows(host, ip) {
            Ok(())
        } else {
            Err(refuse(format!(
                "{ip} is a {} address; {ALLOW_HINT}",
                address_kind(ip)
            )))
        }
    }

    /// [`WebhookPolicy::check_url`], then resolves the host and checks
    /// every address it resolves to: a registration is refused at once
    /// rather than failing at its first notification.
    pub async fn check_resolved(&self, url: &str) -> Result<Url> {
        let parsed = self.check_url(url)?;
        let name = parsed.host_str().unwrap_or_default();
        if literal_ip(name).is_some() {
            return Ok(parsed);
        }
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addrs =
            tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| PqaError::WebhookRefused {
                    url: url.chars().take(200).collect(),
                    rule: format!("its host `{name}` does not resolve ({e})"),
                })?;
        for addr in addrs {
            if !self.allows(name, addr.ip()) {
                return Err(PqaError::WebhookRefused {
                    url: url.chars().take(200).collect(),
                    rule: format!(
                        "its host `{name}` resolves to {}, a {} address; {ALLOW_HINT}",
                        addr.ip(),
                        address_kind(addr.ip())
                    ),
                });
            }
        }
        Ok(parsed)
    }
}

const ALLOW_HINT: &str =
    "webhooks reach public hosts only unless the operator lists the host in webhook_allow_hosts";

fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn normalize_host(host: &str) -> String {
    let h = host
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.');
    match h.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h.to_ascii_lowercase(),
    }
}

/// Whether `ip` is a globally routed unicast address.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (b & 0xc0) == 64)
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b & 0xfe) == 18)
        // Reserved, 240.0.0.0/4.
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // Addresses that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // IPv4-compatible (deprecated) ::a.b.c.d.
        || s[0..6] == [0, 0, 0, 0, 0, 0]
        // Unique local fc00::/7.
        || (s[0] & 0xfe00) == 0xfc00
        // Link-local fe80::/10 and site-local fec0::/10.
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        // Documentation 2001:db8::/32.
        || (s[0] == 0x2001 && s[1] == 0x0db8))
}

fn address_kind(ip: IpAddr) -> &'static str {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    match (ip, v4) {
        (_, Some(v4)) if v4.is_loopback() => "loopback",
        (_, Some(v4)) if v4.is_private() => "private",
        (_, Some(v4)) if v4.is_link_local() => "link-local",
        (_, Some(v4)) if v4.is_unspecified() => "unspecified",
        (IpAddr::V6(v6), None) if v6.is_loopback() => "loopback",
        (IpAddr::V6(v6), None) if v6.is_unspecified() => "unspecified",
        (IpAddr::V6(v6), None) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        (IpAddr::V6(v6), None) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "private",
        _ => "non-public",
    }
}

/// The client's resolver: every connection, the first and each redirect's,
/// reaches only addresses the policy allows.
#[derive(Debug)]
struct GuardedResolver {
    policy: WebhookPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !policy.allows(&host, a.ip())) {
                let message = format!(
                    "webhook host `{host}` resolves to {}, a {} address; {ALLOW_HINT}",
                    bad.ip(),
                    address_kind(bad.ip())
                );
                return Err(
                    std::io::Error::new(std::io::ErrorKind::PermissionDenied, message).into(),
                );
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

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
    /// A webhook to `url` (http or https) under the default policy: public
    /// hosts only.
    pub fn new(url: &str) -> Result<Self> {
        Self::with_policy(url, &WebhookPolicy::default())
    }

    /// A webhook to `url`, which `policy` must allow (see [`WebhookPolicy`]).
    pub fn with_policy(url: &str, policy: &WebhookPolicy) -> Result<Self> {
        policy.check_url(url)?;
        let redirects = policy.clone();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            // A proxy would resolve the target itself, out of the policy's sight.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match redirects.check_url(attempt.url().as_str()) {
                    Ok(_) => attempt.follow(),
                    Err(e) => attempt.error(format!("redirect refused: {e}")),
                }
            }))
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
                Err(e) => last = error_chain(&e),
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

/// reqwest's own message is "error sending request"; the reason (a refused
/// address, a refused redirect) is in its sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &WebhookPolicy, url: &str) -> String {
        match policy.check_url(url) {
            Err(e @ PqaError::WebhookRefused { .. }) => e.to_string(),
            other => panic!("{url} was not refused: {other:?}"),
        }
    }

    #[test]
    fn only_http_urls_of_public_hosts_by_default() {
        let strict = WebhookPolicy::default();
        let e = refused(&strict, "http://127.0.0.1:7070/v1/tables/x");
        assert!(e.contains("127.0.0.1 is a loopback address"), "{e}");
        assert!(e.contains("webhook_allow_hosts"), "{e}");
        for url in [
            "http://10.1.2.3/h",
            "http://192.168.0.1/h",
            "http://172.16.5.4/h",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0:7070/",
            "http://100.64.0.1/",
            "http://[::1]:7070/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://localhost:7070/",
            "http://api.localhost/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            refused(&strict, url);
        }
        assert!(refused(&strict, "file:///etc/passwd").contains("only http and https"));
        assert!(refused(&strict, "gopher://example.com/").contains("only http and https"));
        refused(&strict, "not a url");
        strict.check_url("https://hooks.example.com/x").unwrap();
        strict.check_url("http://8.8.8.8/x").unwrap();
        strict.check_url("http://[2606:4700::1111]/x").unwrap();
    }

    #[test]
    fn the_allowlist_admits_named_hosts_only() {
        let policy = WebhookPolicy::allowing(&["127.0.0.1".to_string(), "LocalHost".to_string()]);
        policy.check_url("http://127.0.0.1:9/hook").unwrap();
        policy.check_url("http://localhost:9/hook").unwrap();
        refused(&policy, "http://127.0.0.2:9/hook");
        refused(&policy, "http://10.0.0.1/hook");
        let v6 = WebhookPolicy::allowing(&["[::1]".to_string()]);
        v6.check_url("http://[::1]:9/").unwrap();
    }

    #[tokio::test]
    async fn names_are_checked_by_what_they_resolve_to() {
        let strict = WebhookPolicy::default();
        let e = strict
            .check_resolved("http://localhost.:7070/v1/tables/x")
            .await
            .unwrap_err();
        assert!(matches!(e, PqaError::WebhookRefused { .. }), "{e}");
        // What the client's resolver does at every connection: a name that
        // resolves to loopback gets no address.
        let resolver = GuardedResolver { policy: strict };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let e = reqwest::dns::Resolve::resolve(&resolver, name)
            .await
            .err()
            .expect("loopback refused");
        assert!(e.to_string().contains("loopback"), "{e}");
    }
}
