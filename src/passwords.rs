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

use std::cell::RefCell;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

thread_local! {
    /// The memory of this thread's hashes, made once and kept. argon2 would allocate
    /// 19 MiB per hash and free it; glibc then raises its mmap threshold and keeps such
    /// blocks in each thread's arena, and the process grew to ~220 MiB after a dozen
    /// logins. Reused here, the hashing threads hold 19 MiB each and no more.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// argon2 of `password` with `salt` into `out`, in this thread's kept memory.
fn hash_into(argon2: &Argon2<'_>, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        let count = argon2.params().block_count();
        if blocks.len() != count {
            // Only a stored hash with other parameters changes the size (and the OWASP
            // ones are the only ones this gateway writes).
            *blocks = vec![Block::new(); count];
        }
        argon2
            .hash_password_into_with_memory(password, salt, out, blocks.as_mut_slice())
            .is_ok()
    })
}

/// Hashes on the calling thread: for the CLI and for start-up, never the runtime.
pub(crate) fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let argon2 = argon2();
    let mut salt = [0u8; argon2::RECOMMENDED_SALT_LEN];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| PasswordError::Hashing)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    if !hash_into(&argon2, password.as_bytes(), &salt, &mut out) {
        return Err(PasswordError::Hashing);
    }
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|_| PasswordError::Hashing)?,
        salt: Some(Salt::new(&salt).map_err(|_| PasswordError::Hashing)?),
        hash: Some(Output::new(&out).map_err(|_| PasswordError::Hashing)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` hashes to the PHC string `hash` (any argon2 variant and parameters
/// it names); false for anything that is not one.
fn verify_blocking(password: &str, hash: &str) -> bool {
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(phc.algorithm.as_str()),
        Params::try_from(&phc),
        phc.salt.as_ref(),
        phc.hash.as_ref(),
    ) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    hash_into(&argon2, password.as_bytes(), salt.as_ref(), &mut out)
        // Compared in constant time.
        && Output::new(&out).is_ok_and(|got| got == *expected)
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
        // On a thread of its own, whose hashing memory goes back to the system when it
        // ends: a gateway nobody logs in to does not keep 19 MiB for it.
        let dummy = std::thread::spawn(move || hash_blocking(&dummy_password))
            .join()
            .map_err(|_| PasswordError::Hashing)??;
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(threads)),
            jobs,
            dummy: dummy.into(),
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
