//! The HTTP/1.1 request loop: strict bounded parsing, per-request
//! admission, dial-or-reuse of the upstream, framing-preserving body relay,
//! keep-alive and pipelining (a later request is read from the client only
//! after the previous exchange finished, so no byte of it can reach an
//! upstream before it was admitted).

pub(crate) mod admission;
mod body;
mod close;
mod exchange;
mod guard;
pub mod h2;
mod head;
pub(crate) mod l7;
mod request;
mod response;
pub(crate) mod tunnel;
mod verdict;
mod ws_policy;
pub(crate) use ws_policy::WsTextPolicy;

pub use body::{fuzzing as body_fuzzing, BodyFraming};
pub(crate) use body::{read_body, BodyError};
pub use close::answer_and_close;
pub(crate) use exchange::append_fields;
pub use exchange::{
    request_loop, Admission, BodyPlan, BodySigner, BodyTransform, DialFailure, LoopEnd, LoopLimits,
    RejectCause, RequestPolicy, Upgrade, UpstreamKey,
};
pub use head::{read_head, HeadError, HeadLimits};
pub use request::{ParseError, RequestHead};
pub use verdict::{evaluate_request, RequestVerdict};
