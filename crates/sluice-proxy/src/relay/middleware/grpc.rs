//! Registered middleware services: `--middleware NAME=URL[,timeout=DUR][,max_payload_bytes=N]`,
//! reached over gRPC.

use std::sync::Arc;

use super::stage::{HttpStage, WsStage};

/// One `--middleware` registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub url: String,
}

/// A described service.
pub(crate) struct Service;

impl Service {
    pub(crate) async fn connect(reg: &Registration, ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let _ = ca_pem;
        Err(format!(
            "middleware `{}`: gRPC services are not wired yet",
            reg.name
        ))
    }

    pub(crate) async fn validate_config(
        &self,
        name: &str,
        config: &prost_types::Struct,
    ) -> Result<(), String> {
        let _ = (name, config);
        Err("not wired".into())
    }

    pub(crate) fn http_stage(&self) -> Option<Arc<dyn HttpStage>> {
        None
    }

    pub(crate) fn ws_stage(&self) -> Option<Arc<dyn WsStage>> {
        None
    }
}
