//! The SigV4 step of [`super::prepare`] for endpoints with
//! `credential_signing`: the client's signature fields (made with
//! placeholder keys) are taken out of the head before the generic
//! injection, so their placeholders are consumed here, and the request is
//! signed again with the real keys of the provider bound to the endpoint
//! once the head is final (or, when the body must be hashed, once the body
//! is read: [`BodyPlan::Sign`]). See `docs/policy.md`.

use std::sync::Arc;

use sluice_policy::{CredentialSigning, Endpoint, PolicySnapshot, Provider, Secret};

use super::inject::Headers;
use super::sigv4::{
    self, ClientSignature, Keys, PayloadHash, SigV4Error, Signer, EMPTY_SHA256, UNSIGNED_PAYLOAD,
};
use crate::egress::{EgressDecision, Surface, Target};
use crate::refusal::{json_error, Refusal};
use crate::relay::http::{BodyFraming, BodyPlan, RequestHead};
use crate::relay::RelayContext;

/// The largest body sluice reads to hash it (OpenShell's limit).
pub(crate) const SIGN_BODY_LIMIT: usize = 10 * 1024 * 1024;

const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
const CONTENT_SHA256: &str = "X-Amz-Content-Sha256";

/// Fields sluice drops or rewrites on the way (hop-by-hop, framing, the
/// signature itself): never signed, whatever the client listed.
const UNSIGNABLE: [&str; 9] = [
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Why the signing step refuses a request.
#[derive(Debug)]
enum Refuse {
    Client(SigV4Error),
    NoKeys,
    NoHost,
    TooLarge,
}

/// A request whose client signature was taken out, to be signed again.
pub(crate) struct Resign {
    provider: Arc<str>,
    keys: ProviderKeys,
    signing: CredentialSigning,
    region: String,
    service: String,
    form: Form,
    /// The head without the client's signature fields (what injection sees).
    pub(crate) headers: Headers,
    /// The raw query without the client's presigned fields.
    pub(crate) query: Option<String>,
}

enum Form {
    Header {
        signed_headers: Vec<String>,
        payload: PayloadHash,
    },
    Query {
        signed_headers: Vec<String>,
        amz_date: String,
    },
}

/// Whether this request is re-signed, with the client's fields taken out:
/// `Ok(None)` when the endpoint does not sign or the request is not
/// SigV4-signed (it goes on unsigned); `Err` refuses (with its event).
pub(crate) fn begin(
    shared: &RelayContext,
    decision: &EgressDecision,
    endpoint: &Endpoint,
    req: &RequestHead,
    path: &str,
    query: Option<&str>,
) -> Result<Option<Resign>, Refusal> {
    let Some(signing) = endpoint.credential_signing else {
        return Ok(None);
    };
    let refuse = |why: Refuse| refusal(shared, decision, None, &why);
    let client =
        ClientSignature::detect(&req.headers, query).map_err(|e| refuse(Refuse::Client(e)))?;
    let target = &decision.intent.target;
    let ((form, scope), query) = match client {
        ClientSignature::None => return Ok(None),
        ClientSignature::Header {
            scope,
            signed_headers,
        } => {
            let payload =
                sigv4::payload_hash(&req.headers).map_err(|e| refuse(Refuse::Client(e)))?;
            let form = Form::Header {
                signed_headers,
                payload,
            };
            ((form, scope), query.map(str::to_owned))
        }
        ClientSignature::Query {
            scope,
            signed_headers,
            amz_date,
        } => {
            let form = Form::Query {
                signed_headers,
                amz_date,
            };
            ((form, scope), query.map(sigv4::strip_presigned_fields))
        }
    };
    let Some((provider, keys)) = signing_provider(&decision.snapshot, target, path) else {
        return Err(refuse(Refuse::NoKeys));
    };
    let host = target.host.to_string();
    let region = endpoint
        .signing_region
        .as_deref()
        .filter(|r| !r.is_empty())
        .or(Some(scope.region.as_str()).filter(|r| !r.is_empty()))
        .or_else(|| sigv4::region_from_host(&host))
        .unwrap_or("us-east-1")
        .to_owned();
    let service = endpoint
        .signing_service
        .as_deref()
        .unwrap_or(scope.service.as_str())
        .to_owned();
    let header_form = matches!(form, Form::Header { .. });
    let headers: Headers = req
        .headers
        .iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("x-amz-security-token")
                && !(header_form
                    && (n.eq_ignore_ascii_case("authorization")
                        || n.eq_ignore_ascii_case("x-amz-date")))
        })
        .cloned()
        .collect();
    Ok(Some(Resign {
        provider: Arc::clone(&provider.key),
        keys,
        signing,
        region,
        service,
        form,
        headers,
        query,
    }))
}

/// The first provider (in key order) bound to this request that holds an
/// access key id and a secret (credential names are unique, so at most one
/// holds the standard names).
fn signing_provider<'a>(
    snapshot: &'a PolicySnapshot,
    target: &Target,
    path: &str,
) -> Option<(&'a Provider, ProviderKeys)> {
    snapshot
        .providers()
        .iter()
        .filter(|p| p.binds(target.host.as_host_ref(), target.port, path))
        .find_map(|p| ProviderKeys::of(p).map(|k| (p, k)))
}

impl Resign {
    /// The provider whose keys sign (for events).
    pub(crate) fn provider_key(&self) -> Arc<str> {
        Arc::clone(&self.provider)
    }

    /// Signs the final head: `origin` and `headers` as they go on the wire
    /// (after injection and any grant header). Header form: the signature
    /// fields are appended to `headers` now, or, when the body must be
    /// hashed, `body` becomes [`BodyPlan::Sign`]. Query form: `origin` gets
    /// the new presigned query.
    pub(crate) fn finish(
        self,
        shared: &RelayContext,
        decision: &EgressDecision,
        req: &RequestHead,
        origin: &mut String,
        headers: &mut Headers,
        body: &mut BodyPlan,
    ) -> Result<(), Refusal> {
        let refuse = |why: Refuse| refusal(shared, decision, Some(&self.provider), &why);
        let wire_host = wire_host(decision, req).ok_or_else(|| refuse(Refuse::NoHost))?;
        // The fields exactly as written upstream, `Host` included.
        let mut view: Headers = headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
            .cloned()
            .collect();
        view.push(("host".into(), wire_host));
        let (signed_headers, payload, amz_date) = match &self.form {
            Form::Query {
                signed_headers,
                amz_date,
            } => {
                let signer = self.keys.signer(&self.region, &self.service, amz_date);
                let (path, query) = sigv4::split_origin(origin);
                let q = signer.presign_query(
                    &req.method,
                    path,
                    query.unwrap_or(""),
                    &view,
                    &signable(signed_headers),
                );
                *origin = format!("{path}?{q}");
                return Ok(());
            }
            Form::Header {
                signed_headers,
                payload,
            } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                (signable(signed_headers), payload, sigv4::amz_date(now))
            }
        };
        let chosen = match payload {
            PayloadHash::FromClient(v) => Some(v.clone()),
            PayloadHash::Missing => match self.choose_payload(req) {
                Ok(Chosen::Now(hash, add_header)) => {
                    if add_header {
                        let field = (CONTENT_SHA256.to_owned(), hash.clone().into_bytes());
                        headers.push(field.clone());
                        view.push(field);
                    }
                    Some(hash)
                }
                Ok(Chosen::HashBody) => None,
                Err(why) => return Err(refuse(why)),
            },
        };
        // Only sluice's signature authorizes the request.
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
        if let Some(hash) = chosen {
            let signer = self.keys.signer(&self.region, &self.service, &amz_date);
            headers.extend(signer.sign_headers(&req.method, origin, &view, &signed_headers, &hash));
            return Ok(());
        }
        *body = self.sign_body_plan(decision, req, origin, view, signed_headers, amz_date);
        Ok(())
    }

    /// The payload hash when the client sent no `x-amz-content-sha256`.
    fn choose_payload(&self, req: &RequestHead) -> Result<Chosen, Refuse> {
        let unsigned = Chosen::Now(UNSIGNED_PAYLOAD.to_owned(), true);
        if self.signing == CredentialSigning::Sigv4NoBody {
            return Ok(unsigned);
        }
        let declared = match req.framing {
            BodyFraming::None | BodyFraming::Length(0) => {
                return Ok(Chosen::Now(EMPTY_SHA256.to_owned(), self.service == "s3"))
            }
            BodyFraming::Length(n) => Some(n),
            BodyFraming::Chunked | BodyFraming::UntilClose => None,
        };
        let too_large =
            declared.is_some_and(|n| usize::try_from(n).map_or(true, |n| n > SIGN_BODY_LIMIT));
        if !too_large && (declared.is_some() || self.signing == CredentialSigning::Sigv4Body) {
            return Ok(Chosen::HashBody);
        }
        // `sigv4` (auto): S3 takes an unsigned payload (over TLS) for a
        // body too long, or of unknown length, to hold; others need the hash.
        if self.signing == CredentialSigning::Sigv4 && self.service == "s3" {
            return Ok(unsigned);
        }
        if too_large {
            return Err(Refuse::TooLarge);
        }
        Ok(Chosen::HashBody)
    }

    /// Hash the body once read; the loop re-frames it (`Content-Length`),
    /// so that is the length signed.
    fn sign_body_plan(
        self,
        decision: &EgressDecision,
        req: &RequestHead,
        origin: &str,
        mut view: Headers,
        signed_headers: Vec<String>,
        amz_date: String,
    ) -> BodyPlan {
        let guard = decision.snapshot.has_credentials();
        let method = req.method.clone();
        let origin = origin.to_owned();
        let add_header = self.service == "s3";
        BodyPlan::Sign {
            limit: SIGN_BODY_LIMIT,
            sign: Box::new(move |bytes: &[u8]| {
                if guard && sluice_policy::placeholder::contains_marker(bytes) {
                    return Err(json_error(
                        500,
                        "credential_injection_failed",
                        "credential placeholder in a request body that is not opted in to rewriting",
                        None,
                        None,
                    ));
                }
                let hash = sigv4::sha256_hex(bytes);
                view.retain(|(n, _)| {
                    !crate::relay::http::tunnel::FRAMING
                        .iter()
                        .any(|f| n.eq_ignore_ascii_case(f))
                });
                view.push((
                    "content-length".into(),
                    bytes.len().to_string().into_bytes(),
                ));
                let mut fields = Vec::with_capacity(4);
                if add_header {
                    let field = (CONTENT_SHA256.to_owned(), hash.clone().into_bytes());
                    view.push(field.clone());
                    fields.push(field);
                }
                let signer = self.keys.signer(&self.region, &self.service, &amz_date);
                fields.extend(signer.sign_headers(&method, &origin, &view, &signed_headers, &hash));
                Ok(fields)
            }),
        }
    }
}

/// What the payload hash of a request without `x-amz-content-sha256` is.
enum Chosen {
    /// This hash, signed now; with `true` the header is added (and signed).
    Now(String, bool),
    /// The body's hash, once read.
    HashBody,
}

/// The real keys of a provider.
struct ProviderKeys {
    access_key_id: Secret,
    secret_access_key: Secret,
    session_token: Option<Secret>,
}

impl ProviderKeys {
    fn of(p: &Provider) -> Option<Self> {
        let get = |name: &str| {
            p.credentials
                .iter()
                .find(|c| &*c.name == name)
                .map(|c| c.value.clone())
        };
        Some(Self {
            access_key_id: get(ACCESS_KEY_ID)?,
            secret_access_key: get(SECRET_ACCESS_KEY)?,
            session_token: get(SESSION_TOKEN),
        })
    }

    fn signer<'s>(&'s self, region: &'s str, service: &'s str, amz_date: &'s str) -> Signer<'s> {
        Signer {
            keys: Keys {
                access_key_id: self.access_key_id.expose(),
                secret_access_key: self.secret_access_key.expose(),
                session_token: self.session_token.as_ref().map(Secret::expose),
            },
            region,
            service,
            amz_date,
        }
    }
}

/// The client's signed names sluice can sign as they go on the wire.
fn signable(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !UNSIGNABLE.contains(&n.as_str()))
        .cloned()
        .collect()
}

/// The `Host` value the upstream sees: the forward proxy writes the
/// target's authority (port omitted when 80); a tunnel passes the
/// client's. `None` when a tunnel request carries none (HTTP/1.0).
fn wire_host(decision: &EgressDecision, req: &RequestHead) -> Option<Vec<u8>> {
    let t = &decision.intent.target;
    match decision.intent.surface {
        Surface::ForwardHttp => Some(if t.port == 80 {
            t.host.to_string().into_bytes()
        } else {
            t.to_string().into_bytes()
        }),
        Surface::Connect | Surface::Transparent { .. } => req.header("host").map(<[u8]>::to_vec),
    }
}

/// The response (and event) for a request the signing step refuses.
/// Nothing secret is in either: codes, names and limits only.
fn refusal(
    shared: &RelayContext,
    decision: &EgressDecision,
    provider: Option<&str>,
    why: &Refuse,
) -> Refusal {
    let target = &decision.intent.target;
    let (status, code, detail) = match why {
        Refuse::Client(SigV4Error::Streaming) => (
            403,
            "sigv4_streaming_unsupported",
            "signed aws-chunked payloads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) cannot be re-signed; send UNSIGNED-PAYLOAD or a payload hash".to_owned(),
        ),
        Refuse::Client(e) => (400, "sigv4_invalid_request", e.to_string()),
        Refuse::NoKeys => (
            403,
            "sigv4_credentials_unavailable",
            format!(
                "no provider with {ACCESS_KEY_ID} and {SECRET_ACCESS_KEY} is bound to {target}"
            ),
        ),
        Refuse::NoHost => (
            400,
            "sigv4_invalid_request",
            "a re-signed request needs a Host header".to_owned(),
        ),
        Refuse::TooLarge => (
            413,
            "sigv4_body_too_large",
            format!("request body exceeds the SigV4 signing limit ({SIGN_BODY_LIMIT} bytes)"),
        ),
    };
    shared
        .audit
        .credential_signing_refused(decision, provider, code, &detail);
    Refusal::json(status, code, &detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resign(signing: CredentialSigning, service: &str) -> Resign {
        Resign {
            provider: Arc::from("aws"),
            keys: ProviderKeys {
                access_key_id: Secret::new("AKID"),
                secret_access_key: Secret::new("SECRET"),
                session_token: None,
            },
            signing,
            region: "us-east-1".into(),
            service: service.into(),
            form: Form::Header {
                signed_headers: vec!["host".into()],
                payload: PayloadHash::Missing,
            },
            headers: Vec::new(),
            query: None,
        }
    }

    fn head(framing: &str) -> RequestHead {
        let raw = format!("POST /x HTTP/1.1\r\nHost: h.test\r\n{framing}\r\n");
        RequestHead::parse(raw.as_bytes()).expect("head")
    }

    /// The payload hash of a request without `x-amz-content-sha256`, by
    /// mode, service and framing.
    #[test]
    fn payload_choice_table() {
        use CredentialSigning::{Sigv4, Sigv4Body, Sigv4NoBody};
        let over = format!("Content-Length: {}\r\n", SIGN_BODY_LIMIT + 1);
        let chunked = "Transfer-Encoding: chunked\r\n";
        let small = "Content-Length: 5\r\n";
        // (mode, service, framing, want: "empty" | "unsigned" | "body" | "too large")
        let cases: &[(CredentialSigning, &str, &str, &str)] = &[
            (Sigv4NoBody, "s3", small, "unsigned"),
            (Sigv4NoBody, "sts", "", "unsigned"),
            (Sigv4, "sts", "", "empty"),
            (Sigv4, "s3", "Content-Length: 0\r\n", "empty"),
            (Sigv4, "sts", small, "body"),
            (Sigv4Body, "s3", small, "body"),
            (Sigv4Body, "s3", chunked, "body"),
            (Sigv4, "s3", chunked, "unsigned"),
            (Sigv4, "s3", &over, "unsigned"),
            (Sigv4, "sts", chunked, "body"),
            (Sigv4, "sts", &over, "too large"),
            (Sigv4Body, "s3", &over, "too large"),
        ];
        for (mode, service, framing, want) in cases {
            let got = match resign(*mode, service).choose_payload(&head(framing)) {
                Ok(Chosen::Now(h, _)) if h == EMPTY_SHA256 => "empty",
                Ok(Chosen::Now(h, true)) if h == UNSIGNED_PAYLOAD => "unsigned",
                Ok(Chosen::HashBody) => "body",
                Err(Refuse::TooLarge) => "too large",
                _ => "other",
            };
            assert_eq!(got, *want, "{mode:?} {service} {framing:?}");
        }
    }

    #[test]
    fn hop_by_hop_and_framing_are_never_signed() {
        let names: Vec<String> = [
            "host",
            "expect",
            "transfer-encoding",
            "content-type",
            "authorization",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(signable(&names), ["host", "content-type"]);
    }
}
