//! `providers.<key>.metadata` (`gce` | `aws`) and its non-secret values:
//! which credentials each kind needs, and at most one provider per kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::dto::ProviderDto;
use crate::error::Ctx;
use crate::location::join;
use crate::model::{
    Metadata, MetadataKind, AWS_ACCESS_KEY_CREDENTIAL, AWS_SECRET_KEY_CREDENTIAL,
    DEFAULT_METADATA_EMAIL, DEFAULT_METADATA_ROLE, GCE_TOKEN_CREDENTIAL,
};

/// Longest value of any `metadata_*` field.
const MAX_VALUE_LEN: usize = 128;

/// `metadata_email`: printable ASCII, one `@`, no spaces or quotes.
fn valid_email(s: &str) -> bool {
    s.len() <= MAX_VALUE_LEN
        && s.matches('@').count() == 1
        && !s.starts_with('@')
        && !s.ends_with('@')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'-' | b'_' | b'+'))
}

/// `metadata_project_id`: GCP project ids (and legacy `domain:id` forms).
fn valid_project_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_VALUE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
}

/// `metadata_role`: IAM role-name characters, at most 64 bytes (it is a path
/// segment of the IMDS credential URL).
fn valid_role(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.bytes().all(|b| b == b'.')
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'=' | b',' | b'.' | b'@' | b'_' | b'-')
        })
}

/// `metadata_region`: `[a-z0-9-]`, at most 32 bytes (e.g. `eu-west-1`).
fn valid_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// One provider's `metadata` and `metadata_*` fields. `None` when it has none
/// or after reporting an error.
pub(crate) fn compile_metadata(
    ctx: &mut Ctx,
    key: &str,
    path: &str,
    p: &ProviderDto,
    seen: &mut BTreeMap<MetadataKind, String>,
) -> Option<Metadata> {
    let before = ctx.errors.len();
    let at = |f: &str| join(path, f);
    let kind = match p.metadata.as_deref() {
        None => None,
        Some("gce") => Some(MetadataKind::Gce),
        Some("aws") => Some(MetadataKind::Aws),
        Some(other) => {
            ctx.err(
                &at("metadata"),
                format!("unknown metadata `{other}`; expected gce or aws"),
            );
            None
        }
    };
    // Fields of the other kind (or without `metadata`) are mistakes.
    let fields: [(&str, bool, MetadataKind); 4] = [
        (
            "metadata_email",
            p.metadata_email.is_some(),
            MetadataKind::Gce,
        ),
        (
            "metadata_project_id",
            p.metadata_project_id.is_some(),
            MetadataKind::Gce,
        ),
        (
            "metadata_role",
            p.metadata_role.is_some(),
            MetadataKind::Aws,
        ),
        (
            "metadata_region",
            p.metadata_region.is_some(),
            MetadataKind::Aws,
        ),
    ];
    for (f, set, wants) in fields {
        if set && kind != Some(wants) && (kind.is_some() || p.metadata.is_none()) {
            ctx.err_key(
                &at(f),
                format!("`{f}` requires `metadata: {}`", wants.as_str()),
            );
        }
    }
    let kind = kind?;
    let required: &[&str] = match kind {
        MetadataKind::Gce => &[GCE_TOKEN_CREDENTIAL],
        MetadataKind::Aws => &[AWS_ACCESS_KEY_CREDENTIAL, AWS_SECRET_KEY_CREDENTIAL],
    };
    for name in required {
        if !p.credentials.contains_key(*name) {
            ctx.err(
                &at("metadata"),
                format!(
                    "`metadata: {}` requires credential `{name}` in provider `{key}`",
                    kind.as_str()
                ),
            );
        }
    }
    if let Some(other) = seen.get(&kind) {
        ctx.err(
            &at("metadata"),
            format!(
                "`metadata: {}` is already served for provider `{other}`; at most one provider per kind",
                kind.as_str()
            ),
        );
    } else {
        seen.insert(kind, key.to_owned());
    }
    let checked = |ctx: &mut Ctx, f: &str, v: &Option<String>, ok: fn(&str) -> bool| {
        let v = v.as_deref()?;
        if ok(v) {
            Some(Arc::<str>::from(v))
        } else {
            ctx.err(&at(f), format!("invalid {f} `{v}`"));
            None
        }
    };
    let metadata = match kind {
        MetadataKind::Gce => Metadata::Gce {
            email: checked(ctx, "metadata_email", &p.metadata_email, valid_email)
                .unwrap_or_else(|| Arc::from(DEFAULT_METADATA_EMAIL)),
            project_id: checked(
                ctx,
                "metadata_project_id",
                &p.metadata_project_id,
                valid_project_id,
            ),
        },
        MetadataKind::Aws => Metadata::Aws {
            role: checked(ctx, "metadata_role", &p.metadata_role, valid_role)
                .unwrap_or_else(|| Arc::from(DEFAULT_METADATA_ROLE)),
            region: checked(ctx, "metadata_region", &p.metadata_region, valid_region),
        },
    };
    (ctx.errors.len() == before).then_some(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_tables() {
        type Check = fn(&str) -> bool;
        let cases: &[(Check, &str, bool)] = &[
            (valid_email, "sa@proj.iam.gserviceaccount.com", true),
            (valid_email, "a+b@x", true),
            (valid_email, "no-at", false),
            (valid_email, "@x", false),
            (valid_email, "a@", false),
            (valid_email, "a@b@c", false),
            (valid_email, "a b@c", false),
            (valid_email, "a\"@c", false),
            (valid_project_id, "my-project-123", true),
            (valid_project_id, "example.com:proj", true),
            (valid_project_id, "", false),
            (valid_project_id, "a/b", false),
            (valid_project_id, "a\nb", false),
            (valid_role, "sluice", true),
            (valid_role, "ec2+role=x,y.z@w_v-u", true),
            (valid_role, "", false),
            (valid_role, "a/b", false),
            (valid_role, "..", false),
            (valid_role, &"r".repeat(65), false),
            (valid_region, "eu-west-1", true),
            (valid_region, "EU-WEST-1", false),
            (valid_region, "", false),
            (valid_region, "us east", false),
        ];
        for (f, v, ok) in cases {
            assert_eq!(f(v), *ok, "{v:?}");
        }
    }
}
