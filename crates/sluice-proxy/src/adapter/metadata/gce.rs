//! The GCE metadata server subset (facts §8.3): what google-auth's
//! `compute_engine.Credentials`, `google.auth.default()` and `_metadata.ping`
//! ask for. GET only (`405`); `Metadata-Flavor: Google` required and
//! `X-Forwarded-For` refused (`403`); every answer carries
//! `Metadata-Flavor: Google` (added by the listener). The access token is the
//! placeholder of `GCP_ADC_ACCESS_TOKEN`.

use serde_json::json;
use sluice_policy::placeholder::canonical;
use sluice_policy::{Metadata, MetadataKind, PolicySnapshot, GCE_TOKEN_CREDENTIAL};

use super::{split_target, Reply};
use crate::relay::http::RequestHead;

/// The scope the default service account reports.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// `expires_in` of a token answer (the placeholder never expires; clients
/// refresh from the loopback, which is cheap).
pub const TOKEN_EXPIRES_IN: u64 = 3599;
/// The universe domain reported.
const UNIVERSE_DOMAIN: &str = "googleapis.com";

const V1: &str = "/computeMetadata/v1";

/// Answers one request from the snapshot's `metadata: gce` provider.
pub fn answer(head: &RequestHead, snapshot: &PolicySnapshot) -> Reply {
    if head.method != "GET" {
        return Reply::error(405, "method_not_allowed").with_header("Allow", "GET");
    }
    if head.header("x-forwarded-for").is_some() {
        return Reply::error(403, "forwarded_request");
    }
    if head.header("metadata-flavor") != Some(b"Google".as_slice()) {
        return Reply::error(403, "missing_metadata_flavor");
    }
    let Some((path, recursive)) = split_target(&head.target) else {
        return Reply::error(404, "not_found");
    };
    let Some((_, Metadata::Gce { email, project_id })) = snapshot.metadata(MetadataKind::Gce)
    else {
        return Reply::error(503, "metadata_unavailable");
    };
    route(path, recursive, email, project_id.as_deref())
}

fn account_info(email: &str) -> serde_json::Value {
    json!({
        "aliases": ["default"],
        "email": email,
        "scopes": [CLOUD_PLATFORM_SCOPE],
    })
}

fn route(path: &str, recursive: bool, email: &str, project_id: Option<&str>) -> Reply {
    // A trailing slash is tolerated everywhere (as the real server does).
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let Some(rest) = trimmed.strip_prefix(V1) else {
        return match trimmed {
            "" => Reply::text("computeMetadata/\n"),
            "/computeMetadata" => Reply::text("v1/\n"),
            _ => Reply::error(404, "not_found"),
        };
    };
    let accounts = "/instance/service-accounts";
    match rest {
        "" => Reply::text("instance/\nproject/\nuniverse/\n"),
        "/instance" => Reply::text("service-accounts/\n"),
        "/project" => Reply::text(if project_id.is_some() {
            "project-id\n"
        } else {
            ""
        }),
        "/project/project-id" => match project_id {
            Some(p) => Reply::text(p),
            None => Reply::error(404, "not_found"),
        },
        "/universe" => Reply::text("universe-domain\n"),
        "/universe/universe-domain" => Reply::text(UNIVERSE_DOMAIN),
        r if r == accounts => {
            if recursive {
                Reply::json(&json!({ "default": account_info(email), email: account_info(email) }))
            } else {
                Reply::text(format!("default/\n{email}/\n"))
            }
        }
        r => {
            let Some(rest) = r.strip_prefix(accounts).and_then(|r| r.strip_prefix('/')) else {
                return Reply::error(404, "not_found");
            };
            let (account, leaf) = rest.split_once('/').unwrap_or((rest, ""));
            if account != "default" && account != email {
                return Reply::error(404, "not_found");
            }
            match leaf {
                "" if recursive => Reply::json(&account_info(email)),
                "" => Reply::text("aliases\nemail\nscopes\ntoken\n"),
                "token" => Reply::json(&json!({
                    "access_token": canonical(GCE_TOKEN_CREDENTIAL),
                    "expires_in": TOKEN_EXPIRES_IN,
                    "token_type": "Bearer",
                })),
                "email" => Reply::text(email),
                "scopes" => Reply::text(format!("{CLOUD_PLATFORM_SCOPE}\n")),
                "aliases" => Reply::text("default\n"),
                _ => Reply::error(404, "not_found"),
            }
        }
    }
}
