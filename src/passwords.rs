//! Password hashing: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane), PHC
//! strings in the store.
//!
//! Hashing costs tens of milliseconds of CPU and 19 MiB of memory, so it never runs on the
//! async runtime: every hash and every check goes to a small pool of dedicated threads (one
//! per core) behind a semaphore, so a burst of logins queues here instead of stalling the
//! proxying threads or allocating memory without bound. Those threads run under
//! `SCHED_IDLE`: the kernel preempts them the moment a proxying thread wakes up, so a login
//! burst takes only the CPU that proxying leaves and does not raise proxied latency. (With
//! `SCHED_BATCH` and nice 19, a hash still ran out its 3 ms slice before a woken proxy
//! thread got the core, and the proxied p99 quadrupled under 20 logins/s.) On a core
//! saturated by proxying, logins wait, and past `QUEUE_TIMEOUT` are answered 503. An unknown user is checked against a dummy hash of the same parameters, so "no
//! such user" costs the same time as "wrong password".

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// OWASP Password Storage Cheat Sheet, argon2id: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;
/// A hash request that waits longer than this for a permit is refused (503): the
/// gateway is saturated with logins and the client should come back.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Passwords longer than this are refused before hashing: nobody types 1 KiB, and it
/// bounds the work one request can ask for.
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("too many password checks are waiting")]
    Busy,
    #[error("password hashing failed")]
    Hashing,
}

/// Hashes and checks passwords off the runtime. Cheap to clone; the worker threads end
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Passwords {
    permits: Arc<Semaphore>,
    jobs: SyncSender<Job>,
    /// A hash of a random password, checked for unknown users.
    dummy: Arc<str>,
}

type Job = Box<dyn FnOnce() + Send>;

/// One hashing thread: idle priority, then jobs until the channel closes.
fn worker(jobs: Arc<Mutex<Receiver<Job>>>) {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, thread_native_id,
    };
    if let Err(error) = thread_priority::set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::debug!(?error, "cannot lower the priority of a hashing thread");
    }
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .expect("the OWASP parameters are valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes on the calling thread: for the CLI and for start-up, never the runtime.
pub(crate) fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|_| PasswordError::Hashing)
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    argon2().verify_password(password.as_bytes(), hash).is_ok()
}

impl Passwords {
    /// `concurrency`: hashes allowed at once (one per core is the useful maximum). Makes
    /// the dummy hash, which takes one hash's time.
    pub(crate) fn new(concurrency: usize) -> Result<Passwords, PasswordError> {
        let mut random = [0u8; 32];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| PasswordError::Hashing)?;
        let dummy_password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let threads = concurrency.max(1);
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(threads);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("authgate-hash-{i}"))
                .spawn(move || worker(receiver))
                .map_err(|_| PasswordError::Hashing)?;
        }
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(threads)),
            jobs,
            dummy: hash_blocking(&dummy_password)?.into(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = tokio::time::timeout(QUEUE_TIMEOUT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|_| PasswordError::Busy)?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
            drop(permit);
        });
        // The permit guarantees a free slot, so this does not block the runtime.
        self.jobs.send(job).map_err(|_| PasswordError::Hashing)?;
        result.await.map_err(|_| PasswordError::Hashing)
    }

    pub(crate) async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Whether `password` matches `hash`; with `None` (no such user) the dummy hash is
    /// checked and the answer is always false, in the same time.
    pub(crate) async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.to_string());
        let matches = self.run(move || verify_blocking(&password, &hash)).await?;
        Ok(known && matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_strings_with_owasp_parameters() {
        let hash = hash_blocking("correct horse battery staple").expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_blocking("correct horse battery staple", &hash));
        assert!(!verify_blocking("correct horse battery stapler", &hash));
        assert!(!verify_blocking("x", "not a phc string"));
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let passwords = Passwords::new(1).expect("passwords");
        let hash = passwords.hash("pw-0123456789".into()).await.expect("hash");
        assert!(
            passwords
                .verify("pw-0123456789".into(), Some(hash))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("pw-0123456789".into(), None)
                .await
                .expect("verify")
        );
    }
}
