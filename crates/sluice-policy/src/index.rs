//! The host index behind [`PolicySnapshot::matching_endpoints`](crate::PolicySnapshot::matching_endpoints).
//!
//! Exact names and IP hosts are hash lookups; globs are bucketed by their
//! literal suffix (labels right of the right-most wildcard label) and found
//! by hashing every label suffix of the queried name, then verified;
//! hostless endpoints are bucketed by port. A query allocates nothing.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::host::normalize_ip;
use crate::model::{Endpoint, HostPattern, HostRef};

/// Endpoint positions (`EndpointId.0`) keyed for lookup.
#[derive(Debug, Default)]
pub(crate) struct HostIndex {
    exact: HashMap<Box<str>, Vec<u32>>,
    ip: HashMap<IpAddr, Vec<u32>>,
    globs: HashMap<Box<str>, Vec<u32>>,
    hostless: HashMap<u16, Vec<u32>>,
}

impl HostIndex {
    pub(crate) fn build(endpoints: &[Endpoint]) -> Self {
        let mut idx = Self::default();
        for e in endpoints {
            let id = e.id.0;
            match &e.host {
                HostPattern::Exact(n) => idx.exact.entry(Box::from(&**n)).or_default().push(id),
                HostPattern::Ip(ip) => idx.ip.entry(normalize_ip(*ip)).or_default().push(id),
                HostPattern::Glob(g) => idx
                    .globs
                    .entry(g.literal_suffix().into_boxed_str())
                    .or_default()
                    .push(id),
                HostPattern::Any => {
                    for p in e.ports.iter() {
                        idx.hostless.entry(*p).or_default().push(id);
                    }
                }
            }
        }
        idx
    }

    /// Every endpoint matching `host` on `port`. Order unspecified, no duplicates.
    pub(crate) fn query<'a>(
        &'a self,
        endpoints: &'a [Endpoint],
        host: HostRef<'a>,
        port: u16,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        let name = match host {
            HostRef::Name(n) => Some(n),
            HostRef::Ip(_) => None,
        };
        let direct: &'a [u32] = match host {
            HostRef::Name(n) => self.exact.get(n).map_or(&[], Vec::as_slice),
            HostRef::Ip(ip) => self.ip.get(&normalize_ip(ip)).map_or(&[], Vec::as_slice),
        };
        let globs = name
            .into_iter()
            .flat_map(Suffixes::new)
            .flat_map(move |s| self.globs.get(s).map_or(&[][..], Vec::as_slice).iter())
            .map(move |&i| &endpoints[i as usize])
            .filter(move |e| e.host.matches(host));
        let hostless: &'a [u32] = self.hostless.get(&port).map_or(&[], Vec::as_slice);
        direct
            .iter()
            .map(move |&i| &endpoints[i as usize])
            .chain(globs)
            .filter(move |e| e.ports.binary_search(&port).is_ok())
            .chain(hostless.iter().map(move |&i| &endpoints[i as usize]))
    }
}

/// Proper label suffixes of a name, longest first, ending with `""`:
/// `a.b.c` → `b.c`, `c`, `""`. (A glob always consumes at least one label.)
pub(crate) struct Suffixes<'a> {
    rest: Option<&'a str>,
}

impl<'a> Suffixes<'a> {
    pub(crate) fn new(name: &'a str) -> Self {
        Self { rest: Some(name) }
    }
}

impl<'a> Iterator for Suffixes<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let cur = self.rest?;
        match cur.find('.') {
            Some(i) => {
                let s = &cur[i + 1..];
                self.rest = Some(s);
                Some(s)
            }
            None => {
                self.rest = None;
                (!cur.is_empty()).then_some("")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Suffixes;

    #[test]
    fn suffixes() {
        let v: Vec<&str> = Suffixes::new("a.b.c").collect();
        assert_eq!(v, ["b.c", "c", ""]);
        let v: Vec<&str> = Suffixes::new("x").collect();
        assert_eq!(v, [""]);
    }
}
