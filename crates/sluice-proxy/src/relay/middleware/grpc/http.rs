//! The `HTTP_REQUEST/PRE_CREDENTIALS` stage of a registered service: one
//! unary `EvaluateHttpRequest` per buffered request, over a clone of the
//! service's channel, with the binding's timeout and the service's
//! admission bound (32 running + 64 waiting; beyond that, unavailable at
//! once rather than queueing without end).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::super::proto;
use super::super::stage::{HttpStage, StageError, StageFuture};
use super::manifest::Limits;
use super::{stage_error, Client};

/// Calls running at once per service.
const RUNNING: usize = 32;
/// Calls waiting for one of the running slots per service.
const WAITING: usize = 64;

pub(super) struct GrpcHttpStage {
    name: Arc<str>,
    client: Client,
    limits: Limits,
    admission: Admission,
}

impl GrpcHttpStage {
    pub(super) fn new(name: Arc<str>, client: Client, limits: Limits) -> Self {
        Self {
            name,
            client,
            limits,
            admission: Admission::new(RUNNING, WAITING),
        }
    }
}

impl HttpStage for GrpcHttpStage {
    fn max_payload(&self) -> usize {
        self.limits.max_payload
    }

    fn evaluate(
        &self,
        eval: proto::HttpRequestEvaluation,
    ) -> StageFuture<'_, proto::HttpRequestResult> {
        Box::pin(async move {
            let limit = self.limits.max_payload;
            if eval.body.len() > limit {
                return Err(StageError::TooLarge {
                    size: eval.body.len(),
                    limit,
                });
            }
            let timeout = self.limits.timeout;
            let started = Instant::now();
            let call = async {
                let _slot = self.admission.enter().await.inspect_err(|_| {
                    tracing::debug!(middleware.name = %self.name, "Middleware admission full");
                })?;
                let mut request = tonic::Request::new(eval);
                request.set_timeout(timeout);
                self.client
                    .clone()
                    .evaluate_http_request(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| stage_error(&s, timeout, started.elapsed()))
            };
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or(Err(StageError::Timeout(timeout)))
        })
    }
}

/// A bound on the calls one service has in flight: `running` at once and
/// `waiting` more queued; a call beyond both fails at once.
pub(super) struct Admission {
    /// Running + waiting.
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    capacity: (usize, usize),
}

/// Held for the duration of one call.
pub(super) struct Slot {
    _admitted: OwnedSemaphorePermit,
    _running: OwnedSemaphorePermit,
}

impl Admission {
    pub(super) fn new(running: usize, waiting: usize) -> Self {
        Self {
            admitted: Arc::new(Semaphore::new(running + waiting)),
            running: Arc::new(Semaphore::new(running)),
            capacity: (running, waiting),
        }
    }

    /// Waits for a running slot, unless `running + waiting` calls are
    /// already admitted.
    ///
    /// # Errors
    /// [`StageError::Unavailable`] when full.
    pub(super) async fn enter(&self) -> Result<Slot, StageError> {
        let full = || {
            StageError::Unavailable(format!(
                "admission full ({} running, {} waiting)",
                self.capacity.0, self.capacity.1
            ))
        };
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| full())?;
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| full())?;
        Ok(Slot {
            _admitted: admitted,
            _running: running,
        })
    }
}
