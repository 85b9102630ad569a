//! TLS for the relay: the sandbox CA, per-host leaf certificates, upstream
//! TLS, and tunnel classification.
