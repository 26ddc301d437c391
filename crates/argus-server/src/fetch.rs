//! The SSRF-guarded URL downloader behind CreateImagesFromUrls (and, later, QuickTestImageUrl and the
//! prediction URL routes).
//!
//! Only `http`/`https`; the host is resolved here and every address must be public (loopback, private,
//! link-local, shared, multicast and reserved ranges are refused unless configured otherwise); the request
//! is pinned to the checked address (no DNS rebinding); redirects are followed by hand, each target checked
//! again; the body is streamed with a byte cap and the whole download has a deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use argus_core::limits::{URL_DOWNLOAD_TIMEOUT_SECS, URL_MAX_REDIRECTS};
use argus_core::store::{FetchError, UrlFetcher};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use url::Url;

/// Downloads user-supplied URLs safely.
#[derive(Debug, Clone)]
pub struct GuardedFetcher {
    allow_private: bool,
    timeout: Duration,
}

impl GuardedFetcher {
    /// A fetcher; `allow_private` lets URLs reach loopback and private networks (for trusted set-ups and tests).
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private, timeout: Duration::from_secs(URL_DOWNLOAD_TIMEOUT_SECS) }
    }
}

fn v4_is_public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1]))
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (18..20).contains(&o[1]))
        || o[0] >= 240)
}

fn v6_is_public(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_is_public(v4);
    }
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x64 && s[1] == 0xff9b))
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => v6_is_public(v6),
    }
}

impl GuardedFetcher {
    async fn resolve(&self, url: &Url) -> Result<SocketAddr, FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Refused(format!("scheme '{}' is not allowed (use http or https)", url.scheme())));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(url::Host::Domain(d)) => tokio::net::lookup_host((d, port))
                .await
                .map_err(|e| FetchError::Failed(format!("cannot resolve '{d}': {e}")))?
                .collect(),
            None => return Err(FetchError::Refused("the URL has no host".into())),
        };
        let first = *addrs.first().ok_or_else(|| FetchError::Failed("the host resolved to no address".into()))?;
        if !self.allow_private {
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(FetchError::Refused(format!("the host resolves to a non-public address ({})", bad.ip())));
            }
        }
        Ok(first)
    }

    async fn fetch_inner(&self, url: &str, max_bytes: usize) -> Result<Bytes, FetchError> {
        let mut current = Url::parse(url).map_err(|e| FetchError::Refused(format!("not a valid URL: {e}")))?;
        for _ in 0..=URL_MAX_REDIRECTS {
            let addr = self.resolve(&current).await?;
            let mut builder =
                reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(self.timeout);
            if let Some(domain) = current.domain() {
                builder = builder.resolve(domain, addr);
            }
            let client = builder.build().map_err(|e| FetchError::Failed(e.to_string()))?;
            let resp = client.get(current.clone()).send().await.map_err(|e| FetchError::Failed(e.to_string()))?;
            if resp.status().is_redirection() {
                let loc = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchError::Failed("redirect without a Location".into()))?;
                current = current.join(loc).map_err(|e| FetchError::Failed(format!("bad redirect: {e}")))?;
                continue;
            }
            if !resp.status().is_success() {
                return Err(FetchError::Failed(format!("the server answered {}", resp.status())));
            }
            if resp.content_length().is_some_and(|n| n as usize > max_bytes) {
                return Err(FetchError::TooLarge(max_bytes));
            }
            let mut body = BytesMut::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| FetchError::Failed(e.to_string()))?;
                if body.len() + chunk.len() > max_bytes {
                    return Err(FetchError::TooLarge(max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(body.freeze());
        }
        Err(FetchError::Failed(format!("more than {URL_MAX_REDIRECTS} redirects")))
    }
}

#[async_trait]
impl UrlFetcher for GuardedFetcher {
    async fn fetch(&self, url: &str, max_bytes: usize) -> Result<Bytes, FetchError> {
        match tokio::time::timeout(self.timeout, self.fetch_inner(url, max_bytes)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Failed(format!("timed out after {} s", self.timeout.as_secs()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[tokio::test]
    async fn refuses_loopback_and_bad_schemes() {
        let f = GuardedFetcher::new(false);
        assert!(matches!(f.fetch("http://127.0.0.1:9/x.png", 10).await, Err(FetchError::Refused(_))));
        assert!(matches!(f.fetch("http://localhost:9/x.png", 10).await, Err(FetchError::Refused(_))));
        assert!(matches!(f.fetch("file:///etc/passwd", 10).await, Err(FetchError::Refused(_))));
        assert!(matches!(f.fetch("http://[::1]:9/", 10).await, Err(FetchError::Refused(_))));
    }
}
