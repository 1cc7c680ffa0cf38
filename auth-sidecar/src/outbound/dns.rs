//! DNS behind a small trait, so that discovery and the SSRF guard can be tested with fake answers.
//!
//! Production uses [`HickoryDns`]: hickory-resolver with the system configuration (`/etc/resolv.conf`,
//! `/etc/hosts`), whose cache honours record TTLs, so repeated SRV and A/AAAA lookups stay in memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use hickory_resolver::TokioResolver;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;

/// Records kept by hickory's cache; well above the number of homeservers a deployment talks to.
const DNS_CACHE_SIZE: u64 = 8_192;

/// One SRV answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Target host name without the trailing dot; `.` (RFC 2782 "no service") stays `.`.
    pub target: String,
}

/// Why a lookup gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN or no records of the asked type: a definite "there is none".
    #[error("no DNS records for {0}")]
    NotFound(String),
    /// Anything else (timeout, SERVFAIL, unparsable name): the answer is unknown.
    #[error("DNS lookup of {name} failed: {detail}")]
    Failed { name: String, detail: String },
}

/// The DNS queries outbound calls need.
pub trait Dns: Send + Sync {
    /// SRV records of `name` (e.g. `_matrix-fed._tcp.example.com`), in answer order.
    fn lookup_srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, DnsError>>;
    /// A and AAAA records of `host`. Never empty on success.
    fn lookup_ip<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
}

/// [`Dns`] over hickory-resolver.
pub struct HickoryDns {
    resolver: TokioResolver,
}

impl HickoryDns {
    /// A resolver configured like the system's.
    pub fn from_system_conf() -> Result<Self, DnsError> {
        let failed = |error: NetError| DnsError::Failed {
            name: "system resolver configuration".into(),
            detail: error.to_string(),
        };
        let mut builder = TokioResolver::builder_tokio().map_err(failed)?;
        builder.options_mut().cache_size = DNS_CACHE_SIZE;
        Ok(Self {
            resolver: builder.build().map_err(failed)?,
        })
    }
}

fn dns_error(name: &str, error: &NetError) -> DnsError {
    if error.is_no_records_found() {
        DnsError::NotFound(name.to_owned())
    } else {
        DnsError::Failed {
            name: name.to_owned(),
            detail: error.to_string(),
        }
    }
}

impl Dns for HickoryDns {
    fn lookup_srv<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<SrvRecord>, DnsError>> {
        Box::pin(async move {
            let lookup = self
                .resolver
                .srv_lookup(name)
                .await
                .map_err(|e| dns_error(name, &e))?;
            let records: Vec<SrvRecord> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => {
                        let target = srv.target.to_ascii();
                        let target = match target.strip_suffix('.') {
                            Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
                            _ => target,
                        };
                        Some(SrvRecord {
                            priority: srv.priority,
                            weight: srv.weight,
                            port: srv.port,
                            target,
                        })
                    }
                    _ => None,
                })
                .collect();
            if records.is_empty() {
                return Err(DnsError::NotFound(name.to_owned()));
            }
            Ok(records)
        })
    }

    fn lookup_ip<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            let lookup = self
                .resolver
                .lookup_ip(host)
                .await
                .map_err(|e| dns_error(host, &e))?;
            let ips: Vec<IpAddr> = lookup.iter().collect();
            if ips.is_empty() {
                return Err(DnsError::NotFound(host.to_owned()));
            }
            Ok(ips)
        })
    }
}

/// reqwest's resolver hook over [`Dns`], with no filtering (calls to operator-configured endpoints).
pub(crate) struct PlainResolver(pub(crate) Arc<dyn Dns>);

impl reqwest::dns::Resolve for PlainResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = Arc::clone(&self.0);
        Box::pin(async move {
            let ips = dns.lookup_ip(name.as_str()).await?;
            // Port 0 lets reqwest fill in the URL's port.
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
