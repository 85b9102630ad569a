//! What a service's `Describe` manifest lets sluice run, checked as
//! OpenShell's gateway does at start (middleware-contract §1-4): the V1
//! pairs `HTTP_REQUEST/PRE_CREDENTIALS` and `WEBSOCKET_MESSAGE/PRE_CREDENTIALS`,
//! one binding per operation and phase, a payload capability on each, and
//! an operator limit that fits every one of them (no clamping).

use std::collections::HashSet;
use std::time::Duration;

use super::super::proto::{
    MiddlewareManifest, SupervisorMiddlewareOperation as Op, SupervisorMiddlewarePhase as Phase,
};
use super::super::stage::PLATFORM_MAX_PAYLOAD;
use super::registration::parse_timeout;

/// The limits one binding runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limits {
    /// Largest payload sent: min(operator or binding capability, 4 MiB).
    pub(super) max_payload: usize,
    /// Per call: min(binding timeout, operator timeout).
    pub(super) timeout: Duration,
}

/// The supported bindings of a manifest.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Bindings {
    pub(super) http: Option<Limits>,
    pub(super) ws: Option<Limits>,
    /// Bindings for operations sluice does not run (logged, not fatal).
    pub(super) ignored: Vec<String>,
}

/// Checks `manifest` against the operator's `timeout` and payload limit.
///
/// # Errors
/// One line naming the first offending binding.
pub(super) fn check(
    manifest: &MiddlewareManifest,
    operator_timeout: Duration,
    operator_max: Option<u64>,
) -> Result<Bindings, String> {
    let mut out = Bindings::default();
    let mut seen = HashSet::new();
    for b in &manifest.bindings {
        let op = Op::try_from(b.operation).ok();
        let phase = Phase::try_from(b.phase).ok();
        let label = format!(
            "binding {}/{}",
            op.map_or_else(|| b.operation.to_string(), |o| short(o.as_str_name())),
            phase.map_or_else(|| b.phase.to_string(), |p| short(p.as_str_name())),
        );
        match phase {
            Some(Phase::PreCredentials) => {}
            Some(Phase::PreReturn) => {
                return Err(format!(
                    "{label}: the PRE_RETURN phase is reserved (not supported)"
                ))
            }
            Some(Phase::Unspecified) | None => {
                return Err(format!("{label}: unspecified or unknown phase"))
            }
        }
        if !seen.insert((b.operation, b.phase)) {
            return Err(format!(
                "{label}: advertised more than once (one binding per operation and phase)"
            ));
        }
        let slot = match op {
            Some(Op::HttpRequest) => &mut out.http,
            Some(Op::WebsocketMessage) => &mut out.ws,
            Some(Op::Unspecified) => return Err(format!("{label}: unspecified operation")),
            Some(Op::HttpResponse) | None => {
                out.ignored.push(label);
                continue;
            }
        };
        if b.max_payload_bytes == 0 {
            return Err(format!(
                "{label}: no max_payload_bytes (required for payload operations)"
            ));
        }
        if let Some(max) = operator_max.filter(|m| *m > b.max_payload_bytes) {
            return Err(format!(
                "max_payload_bytes={max} is over the {} bytes {label} accepts (lower it; no clamping)",
                b.max_payload_bytes
            ));
        }
        let timeout = if b.timeout.is_empty() {
            operator_timeout
        } else {
            parse_timeout(&b.timeout)
                .map_err(|e| format!("{label}: timeout {e}"))?
                .min(operator_timeout)
        };
        let cap = operator_max
            .unwrap_or(b.max_payload_bytes)
            .min(PLATFORM_MAX_PAYLOAD as u64);
        *slot = Some(Limits {
            max_payload: usize::try_from(cap).unwrap_or(PLATFORM_MAX_PAYLOAD),
            timeout,
        });
    }
    Ok(out)
}

/// `SUPERVISOR_MIDDLEWARE_OPERATION_HTTP_REQUEST` -> `HTTP_REQUEST`.
fn short(name: &str) -> String {
    name.trim_start_matches("SUPERVISOR_MIDDLEWARE_OPERATION_")
        .trim_start_matches("SUPERVISOR_MIDDLEWARE_PHASE_")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::super::super::proto::MiddlewareBinding;
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn binding(op: Op, phase: Phase, max: u64, timeout: &str) -> MiddlewareBinding {
        MiddlewareBinding {
            operation: op as i32,
            phase: phase as i32,
            max_payload_bytes: max,
            timeout: timeout.into(),
        }
    }

    fn manifest(bindings: Vec<MiddlewareBinding>) -> MiddlewareManifest {
        MiddlewareManifest {
            bindings,
            ..MiddlewareManifest::default()
        }
    }

    #[test]
    fn accepted_manifests() {
        let ms = Duration::from_millis;
        let pre = Phase::PreCredentials;
        let limits = |max: u64, t: u64| {
            Some(Limits {
                max_payload: usize::try_from(max).unwrap(),
                timeout: ms(t),
            })
        };
        // bindings, operator timeout (ms), operator max, http, ws, ignored
        let cases = vec![
            (vec![], 500, None, None, None, 0),
            (
                vec![binding(Op::HttpRequest, pre, MIB, "")],
                500,
                None,
                limits(MIB, 500),
                None,
                0,
            ),
            (
                vec![
                    binding(Op::HttpRequest, pre, MIB, "100ms"),
                    binding(Op::WebsocketMessage, pre, 2 * MIB, "2s"),
                ],
                500,
                Some(MIB),
                limits(MIB, 100),
                limits(MIB, 500),
                0,
            ),
            // A capability above the platform cap is capped when the operator gives none.
            (
                vec![binding(Op::WebsocketMessage, pre, 64 * MIB, "")],
                1000,
                None,
                None,
                limits(4 * MIB, 1000),
                0,
            ),
            // Operations sluice does not run are ignored, not fatal.
            (
                vec![
                    binding(Op::HttpResponse, pre, MIB, ""),
                    MiddlewareBinding {
                        operation: 42,
                        ..binding(Op::HttpRequest, pre, MIB, "")
                    },
                ],
                500,
                None,
                None,
                None,
                2,
            ),
        ];
        for (i, (bindings, t, max, http, ws, ignored)) in cases.into_iter().enumerate() {
            let got =
                check(&manifest(bindings), ms(t), max).unwrap_or_else(|e| panic!("#{i}: {e}"));
            assert_eq!(
                (got.http, got.ws, got.ignored.len()),
                (http, ws, ignored),
                "#{i}"
            );
        }
    }

    #[test]
    fn rejected_manifests() {
        let pre = Phase::PreCredentials;
        let t = Duration::from_millis(500);
        // bindings, operator max, a fragment of the error
        let cases = vec![
            (
                vec![binding(Op::HttpRequest, Phase::PreReturn, MIB, "")],
                None,
                "HTTP_REQUEST/PRE_RETURN: the PRE_RETURN phase is reserved",
            ),
            (
                vec![binding(Op::HttpRequest, Phase::Unspecified, MIB, "")],
                None,
                "unspecified or unknown phase",
            ),
            (
                vec![MiddlewareBinding {
                    phase: 9,
                    ..binding(Op::HttpRequest, pre, MIB, "")
                }],
                None,
                "binding HTTP_REQUEST/9: unspecified or unknown phase",
            ),
            (
                vec![binding(Op::Unspecified, pre, MIB, "")],
                None,
                "unspecified operation",
            ),
            (
                vec![
                    binding(Op::WebsocketMessage, pre, MIB, ""),
                    binding(Op::WebsocketMessage, pre, 2 * MIB, ""),
                ],
                None,
                "WEBSOCKET_MESSAGE/PRE_CREDENTIALS: advertised more than once",
            ),
            (
                vec![binding(Op::HttpRequest, pre, 0, "")],
                None,
                "no max_payload_bytes",
            ),
            (
                vec![
                    binding(Op::HttpRequest, pre, 4 * MIB, ""),
                    binding(Op::WebsocketMessage, pre, MIB, ""),
                ],
                Some(2 * MIB),
                "max_payload_bytes=2097152 is over the 1048576 bytes binding WEBSOCKET_MESSAGE",
            ),
            (
                vec![binding(Op::HttpRequest, pre, MIB, "5ms")],
                None,
                "timeout `5ms` is outside 10ms..30s",
            ),
            (
                vec![binding(Op::HttpRequest, pre, MIB, "1m")],
                None,
                "timeout `1m` is not <int>ms or <int>s",
            ),
        ];
        for (bindings, max, want) in cases {
            let e = check(&manifest(bindings), t, max).expect_err(want);
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }
}
