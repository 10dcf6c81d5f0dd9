//! Where the servers may send requests that users choose (webhook URLs):
//! the SSRF rules, shared by the api (at registration) and the webhook
//! sender (at every connection, after DNS resolution).
//!
//! - Only `https` URLs (and `http` when [`DestinationPolicy::allow_http`]),
//!   with a host and without `user:password@`.
//! - Every address a name resolves to must be public: loopback, private
//!   (RFC 1918, CGNAT 100.64/10, IPv6 ULA), link-local (169.254/16 with
//!   the cloud metadata address, fe80::/10), multicast, unspecified,
//!   broadcast and reserved ranges are refused. IPv4-mapped and NAT64
//!   IPv6 addresses are judged by the IPv4 address inside.
//! - [`DestinationPolicy::allow_private`] lets loopback and private
//!   addresses through (development, or receivers inside the cluster);
//!   link-local and the rest stay refused whatever the flags.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// How long a DNS lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What kind of address an IP is, as far as these rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Reachable on the internet.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7.
    Private,
    /// 169.254/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// 224/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8, ::, 255.255.255.255, 240/4 and other ranges that are
    /// never a web server.
    Reserved,
}

impl AddressClass {
    /// Words for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

/// The class of `ip`.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddressClass::Private
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if a == 0 || a >= 240 || ip.is_broadcast() || (a == 192 && b == 0 && ip.octets()[2] == 0)
    {
        // 0/8 "this network", 240/4 reserved + broadcast, 192.0.0/24
        // protocol assignments.
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let [.., hi, lo] = seg;
        let v4 = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
        return classify_v4(v4);
    }
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() {
        AddressClass::Reserved
    } else if seg[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if seg[0] & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if seg[0] == 0 {
        // ::/96 IPv4-compatible and other ::/16 forms.
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Not a URL we send to (scheme, credentials, length, no host).
    #[error("{0}")]
    BadUrl(String),
    /// The name does not resolve.
    #[error("{host} does not resolve: {reason}")]
    Unresolvable {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The host is, or resolves to, an address the rules refuse.
    #[error("{host} resolves to {} ({addr}), which webhooks may not reach", .class.describe())]
    Refused {
        /// The host.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// Its class.
        class: AddressClass,
    },
}

/// The flags that relax the rules (`vodfarm api` and `vodfarm webhooks`
/// must agree; `vodfarm dev` sets both).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct DestinationArgs {
    /// Accept `http://` webhook URLs (only `https://` otherwise).
    #[arg(long = "webhook-allow-http", env = "VODFARM_WEBHOOK_ALLOW_HTTP")]
    pub webhook_allow_http: bool,
    /// Let webhook URLs reach loopback and private addresses (receivers
    /// on this machine or inside the cluster). Link-local addresses (cloud
    /// metadata), multicast and reserved ranges stay refused.
    #[arg(long = "webhook-allow-private", env = "VODFARM_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
}

impl From<DestinationArgs> for DestinationPolicy {
    fn from(a: DestinationArgs) -> DestinationPolicy {
        DestinationPolicy {
            allow_http: a.webhook_allow_http,
            allow_private: a.webhook_allow_private,
        }
    }
}

/// What destinations are allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// Accept `http` URLs too (`https` only otherwise).
    pub allow_http: bool,
    /// Accept loopback and private addresses (never link-local,
    /// multicast or reserved ones).
    pub allow_private: bool,
}

impl DestinationPolicy {
    /// Whether an address may be connected to.
    pub fn check_addr(&self, host: &str, addr: IpAddr) -> Result<(), DestinationError> {
        let class = classify(addr);
        let ok = match class {
            AddressClass::Public => true,
            AddressClass::Loopback | AddressClass::Private => self.allow_private,
            AddressClass::LinkLocal | AddressClass::Multicast | AddressClass::Reserved => false,
        };
        if ok {
            Ok(())
        } else {
            Err(DestinationError::Refused {
                host: host.to_owned(),
                addr,
                class,
            })
        }
    }

    /// Parses and checks a URL's form (scheme, host, no credentials); an
    /// IP literal host is checked too. Names are checked by [`Self::resolve`].
    pub fn check_url(&self, raw: &str) -> Result<url::Url, DestinationError> {
        let bad = |m: &str| DestinationError::BadUrl(m.to_owned());
        if raw.len() > MAX_URL_LEN {
            return Err(bad("the URL is longer than 2048 characters"));
        }
        let url = url::Url::parse(raw.trim()).map_err(|e| bad(&format!("not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(bad("the URL must use https")),
            _ => return Err(bad("the URL must be an https URL")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("the URL must not carry a user name or password"));
        }
        match url.host() {
            None => return Err(bad("the URL has no host")),
            Some(url::Host::Ipv4(ip)) => self.check_addr(&ip.to_string(), IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_addr(&ip.to_string(), IpAddr::V6(ip))?,
            Some(url::Host::Domain("")) => return Err(bad("the URL has no host")),
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// Resolves `host` (a name or an IP literal) and checks every address;
    /// any refused address refuses the whole name (a name with one public
    /// and one private address could be steered to the private one).
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, DestinationError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check_addr(bare, ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let unresolvable = |reason: String| DestinationError::Unresolvable {
            host: host.to_owned(),
            reason,
        };
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((bare, port)))
                .await
                .map_err(|_| unresolvable("the lookup timed out".into()))?
                .map_err(|e| unresolvable(e.to_string()))?
                .collect();
        if addrs.is_empty() {
            return Err(unresolvable("no address".into()));
        }
        for a in &addrs {
            self.check_addr(host, a.ip())?;
        }
        Ok(addrs)
    }

    /// [`Self::check_url`], then [`Self::resolve`] of its host.
    pub async fn check_and_resolve(&self, raw: &str) -> Result<url::Url, DestinationError> {
        let url = self.check_url(raw)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        self.resolve(&host, port).await?;
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_classified() {
        use AddressClass::*;
        for (a, c) in [
            ("8.8.8.8", Public),
            ("2606:4700::1111", Public),
            ("127.0.0.1", Loopback),
            ("127.9.9.9", Loopback),
            ("::1", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("fd00::1", Private),
            ("169.254.169.254", LinkLocal),
            ("fe80::1", LinkLocal),
            ("224.0.0.1", Multicast),
            ("ff02::1", Multicast),
            ("0.0.0.0", Reserved),
            ("::", Reserved),
            ("255.255.255.255", Reserved),
            ("240.0.0.1", Reserved),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b::808:808", Public),
        ] {
            assert_eq!(classify(ip(a)), c, "{a}");
        }
    }

    #[test]
    fn the_flags_open_loopback_and_private_but_never_link_local() {
        let strict = DestinationPolicy::default();
        let dev = DestinationPolicy {
            allow_http: true,
            allow_private: true,
        };
        assert!(strict.check_addr("h", ip("127.0.0.1")).is_err());
        assert!(strict.check_addr("h", ip("10.0.0.1")).is_err());
        assert!(strict.check_addr("h", ip("8.8.8.8")).is_ok());
        assert!(dev.check_addr("h", ip("127.0.0.1")).is_ok());
        assert!(dev.check_addr("h", ip("10.0.0.1")).is_ok());
        for a in ["169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0"] {
            assert!(dev.check_addr("h", ip(a)).is_err(), "{a}");
        }
    }

    #[test]
    fn urls_need_https_a_host_and_no_credentials() {
        let strict = DestinationPolicy::default();
        let http_ok = DestinationPolicy {
            allow_http: true,
            allow_private: false,
        };
        assert!(strict.check_url("https://hooks.example.com/x").is_ok());
        assert!(strict.check_url("http://hooks.example.com/x").is_err());
        assert!(http_ok.check_url("http://hooks.example.com/x").is_ok());
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "not a url",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://127.0.0.1/",
            "file:///etc/passwd",
        ] {
            assert!(strict.check_url(bad).is_err(), "{bad}");
        }
        assert!(http_ok.check_url("http://169.254.169.254/").is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(strict.check_url(&long).is_err());
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let strict = DestinationPolicy::default();
        let dev = DestinationPolicy {
            allow_http: true,
            allow_private: true,
        };
        match strict.resolve("localhost", 80).await {
            Err(DestinationError::Refused { class, .. }) => {
                assert_eq!(class, AddressClass::Loopback);
            }
            other => panic!("localhost: {other:?}"),
        }
        assert!(dev.resolve("localhost", 80).await.is_ok());
        assert!(dev.resolve("169.254.169.254", 80).await.is_err());
        assert!(dev.resolve("[::1]", 80).await.is_ok());
    }
}
