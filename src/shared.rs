//! What outlives one config: the revocation map, the live API keys, the accounts' store, password hasher and
//! login limits, the metrics, the tunnels the drain waits for, and the request-id
//! sequence. Opened once at start; every config a reload makes shares it.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::accounts::{AccountsState, LoginLimits};
use crate::api_keys::ApiKeys;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::passwords::{PasswordError, Passwords};
use crate::request_id::RequestIds;
use crate::revocation::Revocations;
use crate::store::StoreError;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error("cannot set up password hashing")]
    Passwords(#[from] PasswordError),
    #[error("a start-up task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// State shared by every config of the process. Cloning shares it (each field is an
/// `Arc` or a handle).
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) revocations: Arc<Revocations>,
    /// The store's live API keys (empty without `[store]`).
    pub(crate) api_keys: Arc<ApiKeys>,
    /// With the passwords and limits of the accounts; `None` without `[store]`.
    pub(crate) accounts: Option<AccountsState>,
    pub(crate) metrics: Arc<Metrics>,
    /// Work that outlives its request (WebSocket tunnels), awaited by the drain.
    pub(crate) tasks: TaskTracker,
    pub(crate) request_ids: Arc<RequestIds>,
}

impl Shared {
    /// Opens the store, loads every revocation in force into the map and the live API
    /// keys, and prepares the
    /// password hasher. Also returns the store's revocation cursor, from which the
    /// follower goes on.
    pub(crate) async fn open(config: &Config) -> Result<(Shared, i64), StartError> {
        let mut shared = Shared {
            revocations: Arc::new(Revocations::new()),
            api_keys: Arc::new(ApiKeys::new()),
            accounts: None,
            metrics: Arc::new(Metrics::new()),
            tasks: TaskTracker::new(),
            request_ids: Arc::new(RequestIds::new()),
        };
        let Some(url) = config.store.clone() else {
            return Ok((shared, 0));
        };
        let keys = shared.api_keys.clone();
        let (store, loaded, cursor, passwords) = tokio::task::spawn_blocking(move || {
            let store = crate::store::open(&url)?;
            let version = store.api_keys_version()?;
            keys.load(&store.api_keys()?, version);
            let (loaded, cursor) = store.revocations_since(0)?;
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
            let passwords = Passwords::new(cores)?;
            Ok::<_, StartError>((store, loaded, cursor, passwords))
        })
        .await??;
        for revocation in &loaded {
            shared.revocations.apply(revocation);
        }
        tracing::info!(
            revocations = shared.revocations.len(),
            api_keys = shared.api_keys.len(),
            "store opened"
        );
        shared.accounts = Some(AccountsState {
            store,
            passwords,
            limits: Arc::new(LoginLimits::new(&config.accounts)),
        });
        Ok((shared, cursor))
    }
}
