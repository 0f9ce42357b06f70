//! authgate: an authentication gateway in one binary.
//!
//! It terminates TLS, verifies a JWT on every request that a route protects, and forwards
//! the request to an upstream with the caller's identity in a header that no client can
//! forge.
//!
//! # Layout
//!
//! Modules, from the edges in. No two import each other, directly or around a loop; the
//! public ones are what the binary, the tests, the benches and the fuzz targets use.
//!
//! | module | its one job |
//! | --- | --- |
//! | `server` | sockets, the connection cap, TLS handshakes, protocol detection, drain |
//! | `activity` | which connections are busy; idle ones closed, and first to go at the cap |
//! | [`framing`] | the HTTP/1 framing scanner: Content-Length with Transfer-Encoding flagged |
//! | `watched` | a stream whose reads a watcher sees (the scanner, the HTTP/2 preface deadline) |
//! | `state` | the config snapshot in force, its reload, the store follower |
//! | `shared` | what outlives one config: revocations, accounts state, metrics, tunnels |
//! | `gateway` | the request path, phase by phase, and the one error-to-response point |
//! | `head` | what a request head must be first: one framing, one valid Host, no CONNECT |
//! | `peer` | the connection's peer, trusted proxies, client IP, forwarded chain |
//! | `request_id` | request ids: a trusted proxy's kept, ours otherwise |
//! | `cors` | a route's CORS policy: preflights answered, headers for allowed origins |
//! | [`routes`] | path normalization and the route table |
//! | [`auth`] | the one authenticator: credentials → a verified caller; token minting |
//! | `issuers` | `[[issuer]]`: other issuers' keys from their JWKS, refreshed; their tokens' claims |
//! | [`client_cert`] | a verified client certificate read once; its XFCC; `client_identity` patterns |
//! | [`api_keys`] | the API key format (checksum, hash) and the live keys, in memory |
//! | `route_limits` | the routes' `rate_limit`, per caller or address, bounded |
//! | `accounts` | register, login, refresh, logout, me; login limits |
//! | `browser` | browser sessions: login page, cookies, CSRF, redirects, renewal |
//! | `buckets` | token buckets (GCRA) by key: login limits and route rate limits |
//! | `passwords` | argon2id hashing off the runtime |
//! | [`jwt`] | claims, keys bound to algorithms, verification and signing |
//! | `revocation` | revoked tokens and users, in memory, for the hot path |
//! | [`store`] | durable users, refresh families, revocations (SQLite, Redis) |
//! | `proxy` | forwarding: header hygiene, identity headers, streaming, tunnels |
//! | `pool` | upstream connections and the response body that returns one |
//! | `request_body` | a request body held to the route's limits as it streams |
//! | `body` | the response body type |
//! | `echo` | the `builtin:echo` upstream |
//! | `untrusted` | client text made safe for a log line: escaped, bounded |
//! | `headers` | header names the gateway manages and their folded spelling |
//! | `admin` | `/healthz`, `/readyz`, `/metrics` on the admin listener |
//! | `metrics` | the Prometheus counters and histograms |
//! | `error` | the error type and its one mapping to a response |
//! | [`config`] | `gateway.toml` → validated [`config::Config`] |
//! | [`tls`] | PEM → rustls server and client configurations |
//! | [`cli`] | the command line and the commands besides `serve` |
//!
//! # The request path
//!
//! Read it in `gateway.rs`: peer, route, own endpoints, authenticate, authorize, forward,
//! log — each one call into one module.

mod accounts;
mod activity;
mod admin;
pub mod api_keys;
pub mod auth;
mod body;
mod browser;
mod buckets;
pub mod cli;
pub mod client_cert;
pub mod config;
mod cors;
mod echo;
mod error;
pub mod framing;
mod gateway;
mod head;
mod headers;
mod issuers;
pub mod jwt;
mod metrics;
mod passwords;
mod peer;
mod pool;
mod proxy;
mod request_body;
mod request_id;
mod revocation;
mod route_limits;
pub mod routes;
mod server;
mod shared;
mod state;
pub mod store;
pub mod tls;
mod untrusted;
mod watched;

pub use server::{Listeners, run, serve};
pub use shared::StartError;
