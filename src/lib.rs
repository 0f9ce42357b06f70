//! authgate: an authentication gateway in one binary.
//!
//! It terminates TLS, verifies a JWT on every request that a route protects, and forwards
//! the request to an upstream with the caller's identity in a header that no client can
//! forge.
//!
//! # Layout
//!
//! | module | its one job |
//! | --- | --- |
//! | [`config`] | `gateway.toml` → validated [`config::Config`] |
//! | [`tls`] | PEM → rustls server and client configurations |
//! | [`server`] | sockets, TLS handshakes, HTTP/1.1 + HTTP/2, graceful drain |
//! | [`gateway`] | the request path, phase by phase |
//! | [`routes`] | path normalization and the route decision |
//! | [`jwt`] | claims, keys bound to algorithms, verification and signing |
//! | [`revocation`] | revoked tokens and users, in memory, for the hot path |
//! | [`proxy`] | upstream clients, header hygiene, identity headers, tunnels |
//! | [`echo`] | the `builtin:echo` upstream |
//! | [`admin`] | `/healthz`, `/readyz` |
//! | [`error`] | the error type and its one mapping to a response |
//! | [`cli`] | the commands besides `serve` |
//!
//! # The request path
//!
//! 1. route: normalize the path (400 on ambiguous spellings), match a route (404);
//! 2. authenticate: one bearer token, verified, not revoked (401);
//! 3. authorize: the route's required roles (403);
//! 4. forward: header hygiene, identity headers, stream to the upstream (502/504);
//! 5. log: one event per request.

pub mod accounts;
pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod echo;
pub mod error;
pub mod framing;
pub mod gateway;
pub mod headers;
pub mod jwt;
pub mod metrics;
pub mod passwords;
pub mod proxy;
pub mod revocation;
pub mod routes;
pub mod server;
pub mod store;
pub mod tls;
pub mod token_cache;
pub mod watched;

pub use server::{Listeners, run, serve};
