//! The config in force and its life: what one config makes (the request path, the HTTP
//! settings, the TLS acceptor) is one immutable [`Snapshot`] behind an `ArcSwap`; a reload
//! builds a new snapshot and swaps it in whole, and the store follower keeps the
//! revocation map in step with the store. A request runs entirely on the snapshot current
//! when it started; the next request on any connection sees the new one. What outlives
//! configs is the [`Shared`] state.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::accounts::LoginLimits;
use crate::auth::now_secs;
use crate::config::{Config, LoadOptions, Server, Tokens};
use crate::gateway::Gateway;
use crate::shared::Shared;
use crate::store::{Store, StoreError};

/// How often revocations made elsewhere (the command line, another replica) are read from
/// the store: the contract is "enforced within one second".
const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// How often the API keys' last uses are written to the store.
const KEY_USE_INTERVAL: Duration = Duration::from_secs(5);
/// How often expired revocations, refresh tokens and idle rate-limit buckets are dropped.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The snapshot in force, swapped whole on reload.
pub(crate) type Current = Arc<ArcSwap<Snapshot>>;

/// Everything one config makes for the listener.
pub(crate) struct Snapshot {
    pub(crate) gateway: Arc<Gateway>,
    /// One builder per protocol: the protocol is known before hyper sees a byte (ALPN, or
    /// a bounded look at the first bytes), so nothing waits on a silent client unbounded.
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<TokioExecutor>,
    pub(crate) tls: Option<TlsAcceptor>,
}

impl Snapshot {
    pub(crate) fn new(config: Arc<Config>, shared: &Shared) -> Snapshot {
        let (http1, http2) = http_builders(&config.server);
        Snapshot {
            http1,
            http2,
            tls: config.server.tls.clone().map(TlsAcceptor::from),
            gateway: Arc::new(Gateway::new(config, shared)),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        self.gateway.config()
    }
}

/// HTTP/2 pings find a peer that is gone while its streams stay open (a long download to
/// a vanished client); idle connections are closed by `activity` well before the first.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// gRPC's and hyper's default wait for the ping's answer.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

fn http_builders(server: &Server) -> (http1::Builder, http2::Builder<TokioExecutor>) {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_header_size(server.max_header_bytes)
        .max_headers(server.max_headers)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(server.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    (h1, h2)
}

/// Reloads the config file at each signal: validated fully, then swapped in whole. A file
/// that does not load (or changes what only a restart can) leaves the old config serving.
pub(crate) async fn reload(mut signals: mpsc::Receiver<()>, current: Current, mut shared: Shared) {
    while signals.recv().await.is_some() {
        let old = current.load_full();
        let old_config = old.config();
        let path = old_config.file.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Config::load(
                &path,
                LoadOptions {
                    write_generated: true,
                },
            )
        })
        .await;
        let config = match loaded {
            Ok(Ok(config)) => config,
            Ok(Err(errors)) => {
                for issue in &errors.0 {
                    tracing::error!("reload refused: {issue}");
                }
                shared.metrics.reload(false);
                continue;
            }
            Err(_) => {
                tracing::error!("reload failed: the loading task failed");
                shared.metrics.reload(false);
                continue;
            }
        };
        if let Err(why) = restart_only(old_config, &config) {
            tracing::error!(file = %config.file.display(), "reload refused: {why} needs a restart");
            shared.metrics.reload(false);
            continue;
        }
        if let Some(accounts) = shared.accounts.as_mut()
            && config.accounts.rates() != old_config.accounts.rates()
        {
            accounts.limits = Arc::new(LoginLimits::new(&config.accounts));
        }
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        current.store(Arc::new(Snapshot::new(Arc::new(config), &shared)));
        shared.metrics.reload(true);
        tracing::info!("config reloaded");
    }
}

/// The instant before which a user revocation refuses nothing the verifier would still
/// accept: such a token has `exp` past `now - leeway` and `iat` at most `max_lifetime`
/// before `exp`, so it was issued after the horizon. Measured with `max_lifetime`, not
/// `access_ttl`: a token minted with a longer `--ttl`, or signed elsewhere with the key,
/// lives that long, and purging its user's revocation sooner would let it back in.
fn user_revocation_horizon(tokens: &Tokens, now: i64) -> i64 {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    now.saturating_sub(secs(tokens.max_lifetime))
        .saturating_sub(secs(tokens.leeway))
}

/// What a running process cannot change: its sockets, its store, its runtime, whether it
/// speaks TLS.
fn restart_only(old: &Config, new: &Config) -> Result<(), &'static str> {
    if old.server.listen != new.server.listen {
        return Err("server.listen");
    }
    if old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen) {
        return Err("admin.listen");
    }
    if old.store != new.store {
        return Err("store.url");
    }
    if old.server.tls.is_some() != new.server.tls.is_some() {
        return Err("turning TLS on or off");
    }
    if old.server.worker_threads != new.server.worker_threads {
        return Err("server.worker_threads");
    }
    if old.server.max_connections != new.server.max_connections {
        return Err("server.max_connections");
    }
    Ok(())
}

/// Keeps the revocation map and the live API keys in step with the store, writes the
/// keys' last uses, and purges what has expired.
pub(crate) async fn follow_store(current: Current, shared: Shared, mut cursor: i64) {
    let Some(state) = shared.accounts.clone() else {
        return;
    };
    let mut poll = tokio::time::interval(REVOCATION_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge = tokio::time::Instant::now();
    let mut last_key_uses = tokio::time::Instant::now();
    loop {
        poll.tick().await;
        let store = state.store.clone();
        let follower = shared.clone();
        let record_uses = last_key_uses.elapsed() >= KEY_USE_INTERVAL;
        if record_uses {
            last_key_uses = tokio::time::Instant::now();
        }
        match tokio::task::spawn_blocking(move || {
            follow_once(&*store, &follower, cursor, record_uses)
        })
        .await
        {
            Ok(Ok(next)) => cursor = next,
            Ok(Err(error)) => tracing::warn!(
                error = %crate::error::error_chain(&error),
                "cannot follow the store"
            ),
            Err(_) => tracing::warn!("the store follower failed"),
        }
        if last_purge.elapsed() >= PURGE_INTERVAL {
            last_purge = tokio::time::Instant::now();
            let snapshot = current.load_full();
            let tokens = &snapshot.config().tokens;
            let leeway = i64::try_from(tokens.leeway.as_secs()).unwrap_or(0);
            let now = now_secs();
            let horizon = user_revocation_horizon(tokens, now);
            shared.revocations.purge_expired(now, leeway, horizon);
            snapshot.gateway.forget_idle_limits();
            let store = state.store.clone();
            if let Ok(Err(error)) =
                tokio::task::spawn_blocking(move || store.purge(now - leeway, horizon)).await
            {
                tracing::warn!(error = %crate::error::error_chain(&error), "cannot purge the store");
            }
        }
    }
}

/// One step of the follower, on the blocking pool: the revocations after `cursor` (the
/// new cursor is returned), the key set if the store's key version moved, and the keys'
/// last uses when `record_uses`.
fn follow_once(
    store: &dyn Store,
    shared: &Shared,
    cursor: i64,
    record_uses: bool,
) -> Result<i64, StoreError> {
    let (found, next) = store.revocations_since(cursor)?;
    for revocation in &found {
        shared.revocations.apply(revocation);
    }
    let version = store.api_keys_version()?;
    if version != shared.api_keys.version() {
        shared.api_keys.load(&store.api_keys()?, version);
    }
    if record_uses {
        store.touch_api_keys(&shared.api_keys.unrecorded_uses())?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{Algorithm, Claims, Key, OneOrMany, Signer, Verifier};
    use crate::revocation::Revocations;

    /// A user revocation is purged only when no token it refuses could still pass
    /// verification: before, it went after `access_ttl`, and a longer-lived token of the
    /// revoked user (up to `max_lifetime`) was accepted again.
    #[test]
    fn a_user_revocation_outlives_every_token_it_refuses() {
        let key = Key::from_secret(Algorithm::HS256, &[7; 32], None).expect("key");
        let tokens = Tokens {
            keys: vec![key.clone()],
            issuer: "authgate".into(),
            audience: "authgate".into(),
            leeway: Duration::from_secs(30),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(7200),
            verified_cache: 0,
        };
        let verifier = Verifier::new(vec![key.clone()], "authgate".into(), "authgate".into(), 30)
            .with_max_lifetime(7200);
        let signer = Signer::new(key).expect("signer");
        // A token as long-lived as the cap allows, revoked the second after it was issued.
        let issued = 1_800_000_000;
        let claims = Claims {
            sub: "alice".into(),
            iat: Some(issued),
            exp: Some(issued + 7200),
            token_type: Some("access".into()),
            iss: Some("authgate".into()),
            aud: Some(OneOrMany::One("authgate".into())),
            ..Claims::default()
        };
        let token = signer.sign(&claims).expect("sign");
        let revocations = Revocations::new();
        revocations.revoke_user_before("alice", issued + 1);
        // Purged every minute until the token has expired for good: refused all along.
        for now in (issued + 60..issued + 7200 + 120).step_by(60) {
            revocations.purge_expired(now, 30, user_revocation_horizon(&tokens, now));
            let accepted = verifier
                .verify_access(&token, now)
                .is_ok_and(|c| !revocations.refuses(&c));
            assert!(!accepted, "accepted at issue + {}", now - issued);
        }
    }
}
