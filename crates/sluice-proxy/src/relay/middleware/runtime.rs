//! What runs the `network_middlewares` of a policy: the registered services
//! (`--middleware NAME=URL`, described at start) and the built-ins, and the
//! per-generation plan that binds each policy entry to its implementation.
//! A plan is built (and every `config` validated by its implementation) when
//! a policy loads; a policy that names an unknown middleware, or whose config
//! an implementation rejects, or that needs an operation the service does not
//! bind, does not load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_policy::PolicySnapshot;

use super::stage::{HttpStage, WsStage};
use super::{builtin, grpc};

/// One policy middleware bound to its implementation.
pub(crate) struct PlannedStage {
    /// The policy's map key (events, denial bodies).
    pub(crate) key: Arc<str>,
    /// The implementation name (`sluice/regex`, a registration name).
    pub(crate) middleware: Arc<str>,
    pub(crate) fail_open: bool,
    /// Position in `snapshot.middlewares()` (host selection).
    pub(crate) index: usize,
    /// The policy `config` as the wire carries it.
    pub(crate) config: Arc<prost_types::Struct>,
    pub(crate) http: Option<Arc<dyn HttpStage>>,
    pub(crate) ws: Option<Arc<dyn WsStage>>,
}

/// The stages of one policy generation, in `order`.
pub(crate) struct Plan {
    pub(crate) generation: u64,
    pub(crate) stages: Vec<PlannedStage>,
}

/// Registered services and built plans.
pub struct MiddlewareRuntime {
    services: HashMap<Arc<str>, Arc<grpc::Service>>,
    /// The plans of the last generations (the one in force and the one
    /// being loaded), newest last.
    plans: Mutex<Vec<Arc<Plan>>>,
}

impl std::fmt::Debug for MiddlewareRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiddlewareRuntime")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The built-ins followed by `registered` (names of `--middleware`
/// registrations): what a policy's `network_middlewares` may name.
pub fn available<'a>(registered: impl Iterator<Item = &'a str>) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> = builtin::BUILTINS.iter().map(|n| Arc::from(*n)).collect();
    let mut services: Vec<Arc<str>> = registered.map(Arc::from).collect();
    services.sort();
    out.extend(services);
    out
}

/// Plans kept (in force + loading).
const KEPT_PLANS: usize = 2;

impl MiddlewareRuntime {
    /// No registered service (built-ins only).
    #[must_use]
    pub fn builtin_only() -> Self {
        Self {
            services: HashMap::new(),
            plans: Mutex::new(Vec::new()),
        }
    }

    /// The implementations a policy can name: the built-ins and every
    /// registered service (for the capability contract).
    #[must_use]
    pub fn implementations(&self) -> Vec<Arc<str>> {
        available(self.services.keys().map(AsRef::as_ref))
    }

    /// Connects to and describes every registration (`--middleware`).
    ///
    /// # Errors
    /// A service that cannot be reached, or whose manifest is unusable.
    pub async fn connect(
        registrations: &[grpc::Registration],
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, String> {
        let mut services = HashMap::new();
        for reg in registrations {
            if builtin::is_builtin(&reg.name) {
                return Err(format!(
                    "middleware registration `{}`: the `sluice/` prefix is reserved for built-in stages",
                    reg.name
                ));
            }
            let service = grpc::Service::connect(reg, ca_pem).await?;
            if services
                .insert(Arc::from(reg.name.as_str()), Arc::new(service))
                .is_some()
            {
                return Err(format!("middleware `{}` is registered twice", reg.name));
            }
        }
        Ok(Self {
            services,
            plans: Mutex::new(Vec::new()),
        })
    }

    /// Binds every middleware of `snapshot` to its implementation and has
    /// each implementation validate its config; keeps the plan for requests
    /// under that generation.
    ///
    /// # Errors
    /// One line per problem, naming the policy entry.
    pub async fn prepare(&self, snapshot: &PolicySnapshot) -> Result<(), String> {
        let mut stages = Vec::with_capacity(snapshot.middlewares().len());
        let mut problems = Vec::new();
        for (index, m) in snapshot.middlewares().iter().enumerate() {
            let config = Arc::new(json_to_struct(&m.config));
            let bound = if builtin::is_builtin(&m.middleware) {
                builtin::resolve(&m.middleware, &m.config)
            } else if let Some(service) = self.services.get(&m.middleware) {
                match service.validate_config(&m.middleware, &config).await {
                    Ok(()) => Ok((service.http_stage(), service.ws_stage())),
                    Err(e) => Err(e),
                }
            } else {
                Err(format!(
                    "`{}` is neither a registered middleware (--middleware {}=URL) nor a built-in (sluice/regex, sluice/secrets, sluice/size)",
                    m.middleware, m.middleware
                ))
            };
            match bound {
                Ok((None, None)) => problems.push(format!(
                    "network_middlewares.{}: `{}` binds no operation sluice runs (HTTP_REQUEST or WEBSOCKET_MESSAGE at PRE_CREDENTIALS)",
                    m.key, m.middleware
                )),
                Ok((http, ws)) => stages.push(PlannedStage {
                    key: Arc::clone(&m.key),
                    middleware: Arc::clone(&m.middleware),
                    fail_open: m.fail_open,
                    index,
                    config,
                    http,
                    ws,
                }),
                Err(e) => problems.push(format!("network_middlewares.{}: {e}", m.key)),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        let plan = Arc::new(Plan {
            generation: snapshot.generation(),
            stages,
        });
        let mut plans = self
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        plans.retain(|p| p.generation != plan.generation);
        plans.push(plan);
        let excess = plans.len().saturating_sub(KEPT_PLANS);
        plans.drain(..excess);
        Ok(())
    }

    /// The plan for `snapshot`'s generation; `None` when none was prepared
    /// (the policy has middlewares the runtime never validated: callers
    /// refuse).
    pub(crate) fn plan(&self, snapshot: &PolicySnapshot) -> Option<Arc<Plan>> {
        let plans = self
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        plans
            .iter()
            .rev()
            .find(|p| p.generation == snapshot.generation())
            .cloned()
    }
}

/// A JSON object as a protobuf `Struct`.
pub(crate) fn json_to_struct(
    map: &serde_json::Map<String, serde_json::Value>,
) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
