//! Head slots: path segments, query values, header values (including
//! `Basic` credentials after base64 decoding). Nothing here logs a value.

use base64::Engine as _;
use sluice_policy::{placeholder, PolicySnapshot, ProviderId};

use crate::egress::Target;

/// Why a request with placeholders cannot be forwarded.
#[derive(Debug)]
pub(crate) enum CredentialError {
    /// A known credential whose provider is not bound to this host:port/path.
    Mismatch { name: String },
    /// A placeholder naming no configured credential.
    Unknown { name: String },
    /// The secret cannot be placed in this slot (e.g. `/` in a path segment).
    BadSlot,
    /// A reserved marker is still present after rewriting.
    Leftover,
}

/// The rewritten head and which providers supplied credentials.
#[derive(Debug, Default)]
pub(crate) struct Injected {
    pub(crate) providers: Vec<ProviderId>,
}

impl Injected {
    fn note(&mut self, p: ProviderId) {
        if !self.providers.contains(&p) {
            self.providers.push(p);
        }
    }
}

/// Resolve every placeholder in `text` for this request, or refuse.
fn resolve(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    text: &[u8],
    injected: &mut Injected,
) -> Result<Option<Vec<u8>>, CredentialError> {
    let mut out: Option<Vec<u8>> = None;
    let mut last = 0usize;
    for (range, name) in placeholder::find(text) {
        let Some(cred) = snapshot.credential(name) else {
            return Err(CredentialError::Unknown {
                name: name.to_owned(),
            });
        };
        if !snapshot.provider_binds(cred.provider, target.host.as_host_ref(), target.port, path) {
            return Err(CredentialError::Mismatch {
                name: name.to_owned(),
            });
        }
        let o = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 64));
        o.extend_from_slice(&text[last..range.start]);
        o.extend_from_slice(cred.value.expose().as_bytes());
        last = range.end;
        injected.note(cred.provider);
    }
    if let Some(o) = out.as_mut() {
        o.extend_from_slice(&text[last..]);
    }
    Ok(out)
}

/// Resolve placeholders in UTF-8 text, escaping each secret with `escape`.
pub(crate) fn resolve_text(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    text: &str,
    injected: &mut Injected,
    escape: impl Fn(&str) -> String,
) -> Result<String, CredentialError> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut last = 0usize;
    for (range, name) in placeholder::find(text.as_bytes()) {
        let Some(cred) = snapshot.credential(name) else {
            return Err(CredentialError::Unknown {
                name: name.to_owned(),
            });
        };
        if !snapshot.provider_binds(cred.provider, target.host.as_host_ref(), target.port, path) {
            return Err(CredentialError::Mismatch {
                name: name.to_owned(),
            });
        }
        out.push_str(&text[last..range.start]);
        out.push_str(&escape(cred.value.expose()));
        last = range.end;
        injected.note(cred.provider);
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Percent-decode (invalid escapes left as they are: only used to find placeholders).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Percent-encode everything but unreserved characters.
fn percent_encode(v: &[u8]) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for &c in v {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Rewrite one path or query component that (after decoding) holds placeholders.
fn rewrite_component(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    raw: &str,
    slot: &'static str,
    injected: &mut Injected,
) -> Result<Option<String>, CredentialError> {
    if !placeholder::contains_marker(raw.as_bytes()) {
        return Ok(None);
    }
    let decoded = percent_decode(raw);
    let Some(value) = resolve(snapshot, target, path, &decoded, injected)? else {
        return Err(CredentialError::Leftover);
    };
    let unsafe_in_path = value
        .iter()
        .any(|&c| matches!(c, b'/' | b'\\' | b'?' | b'#' | b'\r' | b'\n' | 0))
        || value.windows(2).any(|w| w == b"..");
    if slot == "path" && unsafe_in_path {
        return Err(CredentialError::BadSlot);
    }
    Ok(Some(percent_encode(&value)))
}

/// Header fields as (name, value) pairs.
pub(crate) type Headers = Vec<(String, Vec<u8>)>;

/// The rewritten target (if it changed), header list (if it changed), and
/// which providers supplied values.
pub(crate) type HeadRewrite = (Option<String>, Option<Headers>, Injected);

/// Inject credentials into an outgoing head. `path` is the canonical path
/// (without query) used for binding; `query` the raw query. Returns the new
/// origin-form target and header list, or `None` when nothing changed.
pub(crate) fn inject_head(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    query: Option<&str>,
    headers: &[(String, Vec<u8>)],
) -> Result<HeadRewrite, CredentialError> {
    let mut injected = Injected::default();
    // Path segments.
    let mut new_path: Option<String> = None;
    if placeholder::contains_marker(path.as_bytes()) {
        let mut segs = Vec::new();
        for seg in path.split('/') {
            match rewrite_component(snapshot, target, path, seg, "path", &mut injected)? {
                Some(v) => segs.push(v),
                None => segs.push(seg.to_owned()),
            }
        }
        new_path = Some(segs.join("/"));
    }
    // Query values (keys are left alone; a marker in a key is refused below).
    let mut new_query: Option<String> = None;
    if let Some(q) = query.filter(|q| placeholder::contains_marker(q.as_bytes())) {
        let mut parts = Vec::new();
        for part in q.split('&') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match rewrite_component(snapshot, target, path, v, "query", &mut injected)? {
                Some(nv) => parts.push(format!("{k}={nv}")),
                None => parts.push(part.to_owned()),
            }
        }
        new_query = Some(parts.join("&"));
    }
    // Header values.
    let mut new_headers: Option<Vec<(String, Vec<u8>)>> = None;
    for (i, (name, value)) in headers.iter().enumerate() {
        let replaced = header_value(snapshot, target, path, value, &mut injected)?;
        if let Some(v) = replaced {
            let hs = new_headers.get_or_insert_with(|| headers.to_vec());
            hs[i] = (name.clone(), v);
        }
    }
    let final_path = new_path.as_deref().unwrap_or(path);
    let final_query = new_query.as_deref().or(query);
    let origin = match final_query {
        Some(q) => format!("{final_path}?{q}"),
        None => final_path.to_owned(),
    };
    // Backstop: no reserved marker may survive anywhere in the head.
    let hs = new_headers.as_deref().unwrap_or(headers);
    if placeholder::contains_marker(origin.as_bytes())
        || hs.iter().any(|(n, v)| {
            placeholder::contains_marker(n.as_bytes()) || placeholder::contains_marker(v)
        })
    {
        return Err(CredentialError::Leftover);
    }
    let changed_target = (new_path.is_some() || new_query.is_some()).then_some(origin);
    Ok((changed_target, new_headers, injected))
}

fn header_value(
    snapshot: &PolicySnapshot,
    target: &Target,
    path: &str,
    value: &[u8],
    injected: &mut Injected,
) -> Result<Option<Vec<u8>>, CredentialError> {
    if let Some(token) = basic_token(value) {
        // Every reading an upstream's decoder might make is checked: a
        // placeholder in any of them must be bound, and the header is
        // rebuilt from the first such reading (so the upstream gets one
        // canonical value, never the placeholder).
        let mut rewritten: Option<Vec<u8>> = None;
        for decoded in base64_readings(token) {
            if !placeholder::contains_marker(&decoded) {
                continue;
            }
            let Some(new) = resolve(snapshot, target, path, &decoded, injected)? else {
                return Err(CredentialError::Leftover);
            };
            rewritten.get_or_insert_with(|| {
                let engine = base64::engine::general_purpose::STANDARD;
                let mut out = b"Basic ".to_vec();
                out.extend_from_slice(engine.encode(new).as_bytes());
                out
            });
        }
        if rewritten.is_some() {
            return Ok(rewritten);
        }
    }
    if !placeholder::contains_marker(value) {
        return Ok(None);
    }
    let Some(new) = resolve(snapshot, target, path, value, injected)? else {
        return Err(CredentialError::Leftover);
    };
    if new.iter().any(|&c| matches!(c, b'\r' | b'\n' | 0)) {
        return Err(CredentialError::BadSlot);
    }
    Ok(Some(new))
}

/// The credentials of a `Basic` header value: the auth-scheme is compared
/// case-insensitively (RFC 9110 §11.1: `basic`, `BASIC`, `bAsIc`) and
/// followed by one or more spaces (tabs accepted too).
fn basic_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"basic";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    (scheme.eq_ignore_ascii_case(SCHEME) && matches!(rest.first(), Some(b' ' | b'\t')))
        .then(|| rest.trim_ascii())
}

/// What lenient base64 decoders make of `token`: URL-safe letters read as
/// standard ones, padding optional, bytes outside the alphabet (spaces,
/// junk) skipped, as Python's `b64decode` and many servers do; for the
/// whole token, for the part before the first `=` (decoders that stop at
/// padding), and segment by segment between `=` runs (decoders that
/// restart after padding). A strictly valid token reads the same every way.
fn base64_readings(token: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let decode = |part: &[u8]| {
        let mut clean: Vec<u8> = part
            .iter()
            .filter_map(|&c| match c {
                b'-' => Some(b'+'),
                b'_' => Some(b'/'),
                c if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' => Some(c),
                _ => None,
            })
            .collect();
        if clean.len() % 4 == 1 {
            // A dangling sextet carries no whole byte.
            clean.pop();
        }
        engine.decode(&clean).ok()
    };
    let mut readings: Vec<Option<Vec<u8>>> = Vec::with_capacity(3);
    readings.push(decode(token));
    let mut segments = token.split(|&c| c == b'=').filter(|s| !s.is_empty());
    readings.push(decode(segments.next().unwrap_or_default()));
    readings.push(
        token
            .split(|&c| c == b'=')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.concat()),
    );
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(3);
    for d in readings.into_iter().flatten() {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use sluice_policy::MemorySecrets;

    use super::*;

    const SECRET: &str = "pa55-w0rd";

    fn snapshot() -> PolicySnapshot {
        let src = r#"version: 1
network_policies:
  p:
    endpoints:
      - { host: bound.test, port: 443, protocol: rest, access: full, enforcement: enforce }
      - { host: other.test, port: 443, protocol: rest, access: full, enforcement: enforce }
    binaries: [ { path: /usr/bin/curl } ]
providers:
  svc:
    credentials:
      PASS: { env: PASS }
    endpoints: [ { host: bound.test, port: 443 } ]
"#;
        let secrets = MemorySecrets::new().with_env("PASS", SECRET);
        sluice_policy::load_str_with(src, "p.yaml", 1, &secrets)
            .expect("policy loads")
            .snapshot
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn native_credential_fields() {
        let s = snapshot();
        let bound = Target::parse_authority("bound.test:443").unwrap();
        let other = Target::parse_authority("other.test:443").unwrap();
        let resolve =
            |t: &Target, v: &str| super::super::resolve_native_credential(&s, t, v.as_bytes());
        assert_eq!(resolve(&bound, "plain-password"), Ok(None));
        assert_eq!(
            resolve(&bound, "sluice:resolve:env:PASS"),
            Ok(Some(SECRET.to_owned()))
        );
        for (target, value) in [
            (&other, "sluice:resolve:env:PASS"),
            (&bound, "x-sluice:resolve:env:PASS"),
            (&bound, "sluice:resolve:env:PASSsluice:resolve:env:PASS"),
            (&bound, "sluice:resolve:env:NOPE"),
        ] {
            let err = resolve(target, value).expect_err(value);
            assert!(!err.contains(SECRET), "{err}");
        }
    }

    #[test]
    fn basic_scheme_is_case_insensitive() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"Basic dXNlcg==", Some(b"dXNlcg==")),
            (b"basic dXNlcg==", Some(b"dXNlcg==")),
            (b"BASIC dXNlcg==", Some(b"dXNlcg==")),
            (b"bAsIc   dXNlcg== ", Some(b"dXNlcg==")),
            (b"Basic\tdXNlcg==", Some(b"dXNlcg==")),
            (b"Basic ", Some(b"")),
            (b"Basic", None),
            (b"Basicx dXNlcg==", None),
            (b"Bearer dXNlcg==", None),
            (b"Basi", None),
            (b"", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                basic_token(value),
                *want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn base64_readings_cover_lenient_decoders() {
        let plain = "user:sluice:resolve:env:PASS";
        let std = b64(plain);
        let unpadded = std.trim_end_matches('=').to_owned();
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain);
        let spaced: String = std.chars().flat_map(|c| [c, ' ']).collect();
        let junk = format!("{}!*{}", &std[..8], &std[8..]);
        for token in [&std, &unpadded, &url_safe, &spaced, &junk] {
            let readings = base64_readings(token.as_bytes());
            assert!(
                readings.iter().any(|r| r == plain.as_bytes()),
                "{token:?} read as {readings:?}"
            );
        }
        // A decoder that stops at the first `=` reads only the first part.
        let two = format!("{}={}", b64("ab"), b64("sluice:resolve:env:X"));
        let readings = base64_readings(two.as_bytes());
        assert!(readings.iter().any(|r| r == b"ab"), "{readings:?}");
        assert!(
            readings.iter().any(|r| placeholder::contains_marker(r)),
            "{readings:?}"
        );
    }

    /// Every spelling of a `Basic` header with a placeholder: injected on
    /// the bound host, refused on another, never forwarded as is.
    #[test]
    fn basic_credentials_in_any_spelling() {
        let snap = snapshot();
        let bound = Target::parse_authority("bound.test:443").unwrap();
        let other = Target::parse_authority("other.test:443").unwrap();
        let plain = "user:sluice:resolve:env:PASS";
        let std = b64(plain);
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain);
        let want = format!("Basic {}", b64(&format!("user:{SECRET}")));
        for value in [
            format!("Basic {std}"),
            format!("basic {std}"),
            format!("BASIC {std}"),
            format!("BaSiC  {std}"),
            format!("Basic\t{std}"),
            format!("BASIC {}", std.trim_end_matches('=')),
            format!("Basic {url_safe}"),
        ] {
            let headers = vec![("Authorization".to_owned(), value.clone().into_bytes())];
            let (_, new, injected) = inject_head(&snap, &bound, "/", None, &headers)
                .unwrap_or_else(|e| panic!("{value}: {e:?}"));
            let new = new.expect("rewritten");
            assert_eq!(new[0].1, want.as_bytes(), "{value}");
            assert_eq!(injected.providers.len(), 1, "{value}");
            let refused = inject_head(&snap, &other, "/", None, &headers);
            assert!(
                matches!(refused, Err(CredentialError::Mismatch { .. })),
                "{value}: {refused:?}"
            );
        }
        // No placeholder: untouched.
        let headers = vec![(
            "Authorization".to_owned(),
            format!("BASIC {}", b64("u:p")).into_bytes(),
        )];
        let (_, new, _) = inject_head(&snap, &other, "/", None, &headers).unwrap();
        assert!(new.is_none());
    }
}
