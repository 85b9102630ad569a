//! Policy for sluice: load an OpenShell-format policy file (version 1), validate
//! it, and compile it into an immutable [`PolicySnapshot`] with a host index.
//! Pure data and functions: no tokio, no sockets.
//!
//! Entry points: [`load_file`] and [`load_str`] (provider secrets from the
//! process env and files), [`load_str_with`]/[`load_file_with`] (from any
//! [`SecretSource`]). All collect every problem
//! they find and report each as `FILE:LINE:COL: message` ([`Diagnostic`]).
#![forbid(unsafe_code)]

pub mod amend;
pub mod capability;
mod compile;
mod credentials;
mod dto;
mod endpoint;
mod error;
mod glob;
mod host;
mod index;
mod inference;
mod ips;
mod l7;
pub mod location;
mod metadata;
mod middleware;
mod model;
mod overlap;
pub mod placeholder;
pub mod profile;
mod provider;
pub mod redact;
pub mod request;
mod rules;
mod secret;
mod snapshot;
pub mod suggest;
mod url;

use std::path::Path;
use std::sync::Arc;

pub use capability::{Capabilities, Need, Requirement, RuntimeMode};
pub use error::{Diagnostic, LoadError, Loaded, Notice, NoticeLevel};
pub use host::normalize_ip;
pub use inference::{AuthStyle, InferenceEndpoint, InferenceProtocol, InferenceRoute};
pub use model::*;
pub use profile::ProfileOptions;
pub use secret::{
    MemorySecrets, ProcessEnv, Secret, SecretSource, SecretSources, StandInSecrets,
    MAX_SECRET_BYTES, STAND_IN_SECRET,
};
pub use snapshot::{AttachedProfile, PolicySnapshot};

/// Reads, validates and compiles the policy file at `path`. Messages name
/// the file as `path` was given.
///
/// # Errors
/// A [`LoadError`] with every problem found; an unreadable file yields one
/// diagnostic without line/column (`FILE: cannot read: ...`).
pub fn load_file(path: &Path, generation: u64) -> Result<Loaded, LoadError> {
    load_file_with(path, generation, &ProcessEnv)
}

/// Like [`load_file`], reading provider secrets through `secrets`.
///
/// # Errors
/// As [`load_file`].
pub fn load_file_with(
    path: &Path,
    generation: u64,
    secrets: &dyn SecretSource,
) -> Result<Loaded, LoadError> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => load_str_with(&src, &origin, generation, secrets),
        Err(e) => Err(LoadError::whole_file(
            &Arc::from(origin.as_str()),
            format!("cannot read: {e}"),
        )),
    }
}

/// Validates and compiles policy YAML from memory. `origin` is the file
/// name used in messages and returned by [`PolicySnapshot::source`].
///
/// # Errors
/// A [`LoadError`] with every problem found, sorted by position.
pub fn load_str(src: &str, origin: &str, generation: u64) -> Result<Loaded, LoadError> {
    load_str_with(src, origin, generation, &ProcessEnv)
}

/// Like [`load_str`], reading provider secrets (`env`/`file` sources)
/// through `secrets` instead of the process environment.
///
/// # Errors
/// As [`load_str`].
pub fn load_str_with(
    src: &str,
    origin: &str,
    generation: u64,
    secrets: &dyn SecretSource,
) -> Result<Loaded, LoadError> {
    compile::load(src, origin, generation, secrets, &ProfileOptions::default())
}

/// Like [`load_str_with`], also attaching `profiles` (from the command
/// line) and applying their secret bindings. Profile files named by the
/// policy are read relative to `origin`'s directory.
///
/// # Errors
/// As [`load_str`]; problems inside a profile are located in its file.
pub fn load_str_with_profiles(
    src: &str,
    origin: &str,
    generation: u64,
    secrets: &dyn SecretSource,
    profiles: &ProfileOptions,
) -> Result<Loaded, LoadError> {
    compile::load(src, origin, generation, secrets, profiles)
}

/// Like [`load_file`], also attaching `profiles` ([`load_str_with_profiles`]).
///
/// # Errors
/// As [`load_file`].
pub fn load_file_with_profiles(
    path: &Path,
    generation: u64,
    secrets: &dyn SecretSource,
    profiles: &ProfileOptions,
) -> Result<Loaded, LoadError> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => load_str_with_profiles(&src, &origin, generation, secrets, profiles),
        Err(e) => Err(LoadError::whole_file(
            &Arc::from(origin.as_str()),
            format!("cannot read: {e}"),
        )),
    }
}
