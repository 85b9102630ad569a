//! Name resolution with a deadline: `--add-host` pins first, then the
//! system resolver. The only resolver in the proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on addresses kept from one answer.
const MAX_ADDRESSES: usize = 32;

/// Why resolution failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("DNS resolution failed for {name}: {detail}")]
    Failed { name: Arc<str>, detail: String },
    #[error("DNS resolution timed out for {name} after {timeout:?}")]
    Timeout { name: Arc<str>, timeout: Duration },
    #[error("DNS resolution returned no addresses for {name}")]
    Empty { name: Arc<str> },
}

/// Resolves names for the destination validator.
#[derive(Clone, Debug)]
pub struct Resolver {
    pinned: Arc<HashMap<String, Vec<IpAddr>>>,
    timeout: Duration,
    system: bool,
}

impl Resolver {
    /// `pinned` maps lowercase names (no trailing dot) to addresses that
    /// answer before DNS. `system` enables the system resolver after them.
    #[must_use]
    pub fn new(pinned: HashMap<String, Vec<IpAddr>>, timeout: Duration, system: bool) -> Self {
        Self {
            pinned: Arc::new(pinned),
            timeout,
            system,
        }
    }

    /// Resolve `name`; every answer is returned for the validator to filter.
    ///
    /// # Errors
    /// [`ResolveError`] when nothing answers in time or the answer is empty.
    pub async fn resolve(&self, name: &str, port: u16) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(addrs) = self.pinned.get(name) {
            return Ok(addrs.clone());
        }
        let name_arc: Arc<str> = name.into();
        if !self.system {
            return Err(ResolveError::Empty { name: name_arc });
        }
        // The one sanctioned use of the system resolver: answers go straight
        // to the validator, which filters every one of them.
        #[allow(clippy::disallowed_methods)]
        let lookup = tokio::net::lookup_host((name, port));
        let answers = match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => {
                return Err(ResolveError::Timeout {
                    name: name_arc,
                    timeout: self.timeout,
                })
            }
            Ok(Err(e)) => {
                return Err(ResolveError::Failed {
                    name: name_arc,
                    detail: e.to_string(),
                })
            }
            Ok(Ok(a)) => a,
        };
        let mut out: Vec<IpAddr> = Vec::new();
        for sa in answers.take(MAX_ADDRESSES) {
            if !out.contains(&sa.ip()) {
                out.push(sa.ip());
            }
        }
        if out.is_empty() {
            return Err(ResolveError::Empty { name: name_arc });
        }
        Ok(out)
    }
}
