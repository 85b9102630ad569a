//! Linux substrate for `sluice run` and `sluice sidecar-init`, and peer process
//! identity.
//!
//! Everything that touches the Linux kernel directly on behalf of `sluice run`:
//!
//! - [`identity`]: given an accepted proxy connection (or a refused flow), find the
//!   process that owns its sandbox side by reading `/proc` (`openshell-facts.md` §11).
//! - [`netns`]: a fresh network namespace per run, joined to the host by a veth pair on
//!   a private /30, torn down on drop.
//! - [`nft`]: the fail-closed nftables ruleset installed inside that namespace in one
//!   atomic `nft -f -` transaction.
//! - [`confine`]: the sandboxed command's own PID and mount namespaces, its user,
//!   and the loss of every capability (the command cannot remove the fence, see
//!   sluice or read a secret source).
//! - [`bypass`]: the bypass monitor, which reads refused packets from NFLOG, attributes
//!   each to a process while its socket still exists, and makes the sender fail fast.
//! - [`transparent`]: the transparent TCP listener, bound inside the sandbox namespace,
//!   that receives connections the ruleset redirected from synthetic policy-DNS
//!   addresses, and their original destination (`SO_ORIGINAL_DST`).
//! - [`ebpf`]: the connect-time owner map, two small cgroup programs that record
//!   which process connected each socket, so identity need not scan `/proc`.
//! - [`sidecar`]: the Kubernetes shape's fence, an nftables table in the pod's own
//!   namespace that sends the workload's sockets to the `sluice serve` sidecar.
//!
//! This is the only crate in the workspace allowed `unsafe`, and only inside the
//! private `sys` module (netlink and raw sockets, `setns`, the transparent listener's TCP
//! socket and `SO_ORIGINAL_DST`, `kill`, `bpf(2)`); every block there carries
//! a `// SAFETY:` comment. The crate root denies `unsafe` everywhere else.

#![deny(unsafe_code)]

pub mod bypass;
pub mod confine;
pub mod ebpf;
pub mod identity;
pub mod netfilter;
mod netlink;
pub mod netns;
pub mod nft;
pub mod sidecar;
pub mod sockmap;
#[allow(unsafe_code)]
mod sys;
pub mod tools;
pub mod transparent;

pub use identity::{FlowProto, IdentityError, ProcessIdentity, ProcfsIdentity};
pub use sys::{send_signal, Signal};
