//! One module per subcommand.

pub(crate) mod ca;
pub(crate) mod capture;
pub(crate) mod check;
pub(crate) mod explain;
pub(crate) mod fd_limit;
pub(crate) mod proposals;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod sidecar_init;
