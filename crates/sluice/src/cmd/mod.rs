//! One module per subcommand, plus the decision `explain` and `test` share.

pub(crate) mod ca;
pub(crate) mod capture;
pub(crate) mod cases;
pub(crate) mod check;
pub(crate) mod decide;
pub(crate) mod explain;
pub(crate) mod fd_limit;
pub(crate) mod profiles;
pub(crate) mod proposals;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod sidecar_init;
pub(crate) mod test;
