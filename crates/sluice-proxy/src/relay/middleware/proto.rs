//! The supervisor middleware wire types, generated at build time from
//! `proto/openshell/middleware/v1/supervisor_middleware.proto` (package
//! `openshell.middleware.v1`, OpenShell's field numbers).

#![allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic,
    clippy::use_self,
    clippy::manual_let_else
)]

tonic::include_proto!("openshell.middleware.v1");
