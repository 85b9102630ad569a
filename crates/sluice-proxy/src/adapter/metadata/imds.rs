//! The AWS IMDSv2 subset: what botocore's `InstanceMetadataFetcher` (and its
//! IMDS region provider) ask for. `PUT /latest/api/token` with
//! `X-aws-ec2-metadata-token-ttl-seconds` (1..=21600, else `400`) issues an
//! opaque random session token; every `GET` needs a live one in
//! `X-aws-ec2-metadata-token` (`401`); `X-Forwarded-For` is refused (`403`),
//! as the real service does. The credentials are placeholders: the access key,
//! the secret key and always a session token (the SigV4 re-signer drops that
//! one when the provider has no real session token).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls::crypto::SecureRandom;
use serde_json::json;
use sluice_policy::placeholder::canonical;
use sluice_policy::{
    Metadata, MetadataKind, PolicySnapshot, AWS_ACCESS_KEY_CREDENTIAL, AWS_SECRET_KEY_CREDENTIAL,
    AWS_SESSION_TOKEN_CREDENTIAL,
};

use super::{split_target, Reply};
use crate::relay::http::RequestHead;

/// Longest session-token TTL (seconds), as IMDS.
pub const MAX_TOKEN_TTL: u64 = 21_600;
/// Session tokens remembered at once; the one closest to expiry goes first.
pub const MAX_TOKENS: usize = 256;
/// How far in the future the credentials' `Expiration` lies.
pub const CREDENTIAL_LIFETIME: Duration = Duration::from_secs(6 * 3600);

const TOKEN_PATH: &str = "/latest/api/token";
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials";

/// Issued session tokens and when each expires (bounded).
#[derive(Debug, Default)]
pub struct TokenTable {
    tokens: Mutex<HashMap<String, Instant>>,
}

fn random_token() -> Option<String> {
    static RNG: OnceLock<&'static dyn SecureRandom> = OnceLock::new();
    let rng = RNG.get_or_init(|| rustls::crypto::ring::default_provider().secure_random);
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl TokenTable {
    /// A new token valid for `ttl` from `now`; `None` when no randomness is
    /// available (fail closed).
    pub fn issue(&self, ttl: Duration, now: Instant) -> Option<String> {
        let token = random_token()?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, expiry| *expiry > now);
        while tokens.len() >= MAX_TOKENS {
            let oldest = tokens
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(t, _)| t.clone())?;
            tokens.remove(&oldest);
        }
        tokens.insert(token.clone(), now + ttl);
        Some(token)
    }

    /// Whether `token` was issued here and has not expired at `now`.
    pub fn valid(&self, token: &[u8], now: Instant) -> bool {
        let Ok(token) = std::str::from_utf8(token) else {
            return false;
        };
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(token).is_some_and(|expiry| *expiry > now)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tokens.lock().map(|t| t.len()).unwrap_or(0)
    }
}

fn plain(body: impl Into<String>) -> Reply {
    Reply {
        content_type: "text/plain",
        ..Reply::text(body)
    }
}

/// `X-aws-ec2-metadata-token-ttl-seconds`: ASCII digits, 1..=21600.
fn parse_ttl(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 5 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (1..=MAX_TOKEN_TTL).contains(&n).then_some(n)
}

/// Answers one request from the snapshot's `metadata: aws` provider. `wall`
/// dates the credentials; `now` checks session tokens.
pub fn answer(
    head: &RequestHead,
    snapshot: &PolicySnapshot,
    tokens: &TokenTable,
    wall: SystemTime,
    now: Instant,
) -> Reply {
    if head.header("x-forwarded-for").is_some() {
        return Reply::error(403, "forwarded_request");
    }
    let Some((path, _)) = split_target(&head.target) else {
        return Reply::error(404, "not_found");
    };
    let is_token_path = path == TOKEN_PATH;
    match (head.method.as_str(), is_token_path) {
        ("PUT", true) | ("GET", false) => {}
        (_, true) => return Reply::error(405, "method_not_allowed").with_header("Allow", "PUT"),
        _ => return Reply::error(405, "method_not_allowed").with_header("Allow", "GET"),
    }
    let Some((_, Metadata::Aws { role, region })) = snapshot.metadata(MetadataKind::Aws) else {
        return Reply::error(404, "metadata_unavailable");
    };
    if is_token_path {
        let Some(ttl) = head
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(parse_ttl)
        else {
            return Reply::error(400, "invalid_token_ttl");
        };
        return match tokens.issue(Duration::from_secs(ttl), now) {
            Some(token) => {
                plain(token).with_header("X-aws-ec2-metadata-token-ttl-seconds", ttl.to_string())
            }
            None => Reply::error(503, "token_unavailable"),
        };
    }
    let authorized = head
        .header("x-aws-ec2-metadata-token")
        .is_some_and(|t| tokens.valid(t, now));
    if !authorized {
        return Reply::error(401, "missing_or_invalid_token");
    }
    route(path, role, region.as_deref(), wall)
}

fn route(path: &str, role: &str, region: Option<&str>, wall: SystemTime) -> Reply {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    match trimmed {
        "/latest" => plain("api/\nmeta-data/\n"),
        "/latest/meta-data" => plain(if region.is_some() {
            "iam/\nplacement/\n"
        } else {
            "iam/\n"
        }),
        "/latest/meta-data/iam" => plain("security-credentials/\n"),
        CREDENTIALS_PATH => plain(role),
        "/latest/meta-data/placement" if region.is_some() => plain("availability-zone\nregion\n"),
        "/latest/meta-data/placement/availability-zone" => match region {
            Some(r) => plain(format!("{r}a")),
            None => Reply::error(404, "not_found"),
        },
        "/latest/meta-data/placement/region" => match region {
            Some(r) => plain(r),
            None => Reply::error(404, "not_found"),
        },
        p => match p
            .strip_prefix(CREDENTIALS_PATH)
            .and_then(|r| r.strip_prefix('/'))
        {
            Some(r) if r == role => credentials(wall),
            _ => Reply::error(404, "not_found"),
        },
    }
}

fn credentials(wall: SystemTime) -> Reply {
    let body = json!({
        "Code": "Success",
        "LastUpdated": iso8601(wall),
        "Type": "AWS-HMAC",
        "AccessKeyId": canonical(AWS_ACCESS_KEY_CREDENTIAL),
        "SecretAccessKey": canonical(AWS_SECRET_KEY_CREDENTIAL),
        "Token": canonical(AWS_SESSION_TOKEN_CREDENTIAL),
        "Expiration": iso8601(wall + CREDENTIAL_LIFETIME),
    });
    Reply {
        content_type: "text/plain",
        ..Reply::json(&body)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC), the form botocore parses.
pub fn iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
