//! The credentials file: one `device_id:hash` line per device, where `hash` is an argon2id PHC
//! string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`). Blank lines and lines starting with `#`
//! are ignored. `tributary devices add|remove|list|import` manage it; the gateway reads it at
//! start and on SIGHUP.
//!
//! # Verifying without pinning the CPU
//! argon2id is deliberately slow (about 20 ms per check on the VM, several times that on a Pi).
//! A fleet reconnecting after a gateway restart would otherwise queue thousands of them on the
//! async workers. So checks run on their own threads, half as many as there are cores (at least
//! one), so devices already connected keep streaming through a storm ([`Verifier`]). Few,
//! long-lived threads also keep the memory bounded: each check needs 19 MiB, which the
//! allocator keeps per thread. A check whose connection went away while it waited is skipped.
//! A successful check is remembered in memory for [`CACHE_TTL`] as a SHA-256
//! of the stored hash and the password: a device that reconnects within that time costs one
//! hash, not one argon2id. The entry is keyed on the stored hash too, so a changed password
//! invalidates it, and a removed device is refused before the cache is consulted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

/// How long a verified password is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(600);
/// Most remembered verifications; past it the cache starts again empty.
const CACHE_MAX: usize = 200_000;

/// A problem with the credentials file, naming the line.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write credentials file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file {path}, line {line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("the password is empty")]
    EmptyPassword,
    #[error("device id {id:?}: {problem}")]
    DeviceId { id: String, problem: String },
}

/// The parsed file: device id to PHC string, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    entries: BTreeMap<String, String>,
}

impl Credentials {
    /// Reads and checks the whole file; any bad line refuses the file.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses file text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CredentialsError> {
        let mut entries = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let bad = |problem: String| CredentialsError::Line {
                path: path.to_owned(),
                line: index + 1,
                problem,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, hash) = line
                .split_once(':')
                .ok_or_else(|| bad("not device_id:hash".into()))?;
            tributary_protocol::validate_device_id(id)
                .map_err(|e| bad(format!("device id {id:?}: {e}")))?;
            let parsed = PasswordHash::new(hash)
                .map_err(|e| bad(format!("not a PHC password hash: {e}")))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(bad(format!(
                    "hash algorithm {:?} is not argon2id",
                    parsed.algorithm.as_str()
                )));
            }
            if entries.insert(id.to_owned(), hash.to_owned()).is_some() {
                return Err(bad(format!("device {id:?} is listed twice")));
            }
        }
        Ok(Self { entries })
    }

    /// The file text, one line per device, sorted by id.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# Tributary device credentials: device_id:argon2id-hash. Managed by `tributary devices`.\n",
        );
        for (id, hash) in &self.entries {
            out.push_str(id);
            out.push(':');
            out.push_str(hash);
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically (a temporary file renamed over it), readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), CredentialsError> {
        let write = |source| CredentialsError::Write {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(write)?;
            file.write_all(self.to_text().as_bytes()).map_err(write)?;
            file.sync_all().map_err(write)?;
        }
        std::fs::rename(&tmp, path).map_err(write)
    }

    /// Sets (adds or replaces) a device's password.
    pub fn set(&mut self, device_id: &str, password: &str) -> Result<(), CredentialsError> {
        tributary_protocol::validate_device_id(device_id).map_err(|e| {
            CredentialsError::DeviceId {
                id: device_id.to_owned(),
                problem: e.to_string(),
            }
        })?;
        self.entries
            .insert(device_id.to_owned(), hash_password(password)?);
        Ok(())
    }

    /// Sets many `(device id, password)` pairs, hashing on every core; nothing changes if any
    /// pair is refused.
    pub fn set_many(&mut self, pairs: &[(String, String)]) -> Result<(), CredentialsError> {
        for (id, _) in pairs {
            tributary_protocol::validate_device_id(id).map_err(|e| CredentialsError::DeviceId {
                id: id.clone(),
                problem: e.to_string(),
            })?;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = pairs.len().div_ceil(cores).max(1);
        let hashed: Vec<Result<Vec<String>, CredentialsError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = pairs
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(_, password)| hash_password(password))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(CredentialsError::Hash("a hashing thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut hashes = Vec::with_capacity(pairs.len());
        for part in hashed {
            hashes.extend(part?);
        }
        for ((id, _), hash) in pairs.iter().zip(hashes) {
            self.entries.insert(id.clone(), hash);
        }
        Ok(())
    }

    /// Removes a device; returns whether it was there.
    pub fn remove(&mut self, device_id: &str) -> bool {
        self.entries.remove(device_id).is_some()
    }

    /// Device ids, sorted.
    /// Whether the file names `device_id`.
    pub fn contains(&self, device_id: &str) -> bool {
        self.entries.contains_key(device_id)
    }

    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn hash_of(&self, device_id: &str) -> Option<&str> {
        self.entries.get(device_id).map(String::as_str)
    }
}

/// Hashes a password with argon2id and a fresh random salt (OWASP's parameters:
/// m = 19 MiB, t = 2, p = 1).
pub fn hash_password(password: &str) -> Result<String, CredentialsError> {
    if password.is_empty() {
        return Err(CredentialsError::EmptyPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CredentialsError::Hash(e.to_string()))
}

/// Why a password was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordRefusal {
    /// No such device in the credentials file.
    UnknownDevice,
    /// The device exists; the password is wrong.
    WrongPassword,
}

/// Checks passwords on a few threads of its own, with a cache of recent successes.
///
/// A device id the credentials file does not hold is checked against a dummy hash with the same
/// parameters, so an unknown device takes as long to refuse as a wrong password: the time of
/// an answer does not tell which device ids exist.
#[derive(Clone)]
pub struct Verifier {
    jobs: std::sync::mpsc::Sender<Job>,
    cache: Arc<Mutex<HashMap<String, Remembered>>>,
    /// argon2id checks run so far (for tests: an unknown device costs one too).
    checks: Arc<std::sync::atomic::AtomicU64>,
}

/// The dummy hash an unknown device's password is checked against: argon2id with the same
/// parameters as every stored hash, of a password nobody sends, made once.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"\0tributary: no such device\0", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// A verified password's digest and until when it is trusted.
type Remembered = ([u8; 32], Instant);

/// One check: the stored PHC string, the password, and where the verdict goes.
struct Job {
    stored: String,
    password: Vec<u8>,
    verdict: oneshot::Sender<bool>,
}

impl Default for Verifier {
    /// Starts the checking threads; they end when the last clone is dropped.
    fn default() -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..Self::threads() {
            let queue = queue.clone();
            let worker = move || {
                if i == 0 {
                    // Made here, at start, not by the first unknown device on an async worker.
                    let _ = dummy_hash();
                }
                worker_loop(&queue)
            };
            if let Err(error) = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(worker)
            {
                tracing::error!(message = "Cannot start a password-checking thread.", %error);
            }
        }
        Self {
            jobs,
            cache: Arc::default(),
            checks: Arc::default(),
        }
    }
}

impl Verifier {
    /// Whether `password` for `device_id` was verified recently (no check needed).
    pub fn remembered(&self, credentials: &Credentials, device_id: &str, password: &[u8]) -> bool {
        credentials
            .hash_of(device_id)
            .is_some_and(|stored| self.cached(device_id, &remember_key(stored, password)))
    }

    /// The checking threads there are.
    pub fn threads() -> usize {
        (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
    }

    /// Checks `password` for `device_id` against `credentials`.
    pub async fn verify(
        &self,
        credentials: &Credentials,
        device_id: &str,
        password: &[u8],
    ) -> Result<(), PasswordRefusal> {
        let Some(stored) = credentials.hash_of(device_id) else {
            // The same work as a wrong password, then the same answer to the device.
            let _ = self.check_on_thread(dummy_hash(), password).await;
            return Err(PasswordRefusal::UnknownDevice);
        };
        let digest = remember_key(stored, password);
        if self.cached(device_id, &digest) {
            return Ok(());
        }
        if !self.check_on_thread(stored, password).await {
            return Err(PasswordRefusal::WrongPassword);
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(device_id.to_owned(), (digest, Instant::now() + CACHE_TTL));
        Ok(())
    }

    /// argon2id checks run so far.
    pub fn checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One argon2id check on a checking thread. With no checking thread (it could not start)
    /// it refuses rather than let anyone in.
    async fn check_on_thread(&self, stored: &str, password: &[u8]) -> bool {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (verdict, answer) = oneshot::channel();
        let job = Job {
            stored: stored.to_owned(),
            password: password.to_vec(),
            verdict,
        };
        self.jobs.send(job).is_ok() && answer.await.unwrap_or(false)
    }

    fn cached(&self, device_id: &str, digest: &[u8; 32]) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(device_id).is_some_and(|(known, until)| {
            *until > Instant::now() && bool::from(known.ct_eq(digest))
        })
    }
}

/// A checking thread: runs jobs until the last [`Verifier`] clone is dropped.
fn worker_loop(queue: &Mutex<std::sync::mpsc::Receiver<Job>>) {
    loop {
        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else { break };
        if job.verdict.is_closed() {
            continue;
        }
        let _ = job.verdict.send(check(&job.stored, &job.password));
    }
}

fn check(stored: &str, password: &[u8]) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|hash| Argon2::default().verify_password(password, &hash).is_ok())
}

fn remember_key(stored: &str, password: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(stored.as_bytes());
    ctx.update(&[0]);
    ctx.update(password);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(device: &str, password: &str) -> Credentials {
        let mut c = Credentials::default();
        c.set(device, password).unwrap();
        c
    }

    #[tokio::test]
    async fn the_right_password_passes_and_a_wrong_one_or_unknown_device_does_not() {
        let creds = file_with("env-1", "correct horse");
        let v = Verifier::default();
        assert_eq!(v.verify(&creds, "env-1", b"correct horse").await, Ok(()));
        assert_eq!(
            v.verify(&creds, "env-1", b"wrong").await,
            Err(PasswordRefusal::WrongPassword)
        );
        assert_eq!(
            v.verify(&creds, "env-2", b"correct horse").await,
            Err(PasswordRefusal::UnknownDevice)
        );
    }

    #[tokio::test]
    async fn an_unknown_device_costs_the_same_argon2_check_as_a_wrong_password() {
        let creds = file_with("env-1", "correct horse");
        let v = Verifier::default();
        let before = v.checks();
        let _ = v.verify(&creds, "env-1", b"wrong").await;
        let wrong = v.checks() - before;
        let _ = v.verify(&creds, "no-such-device", b"wrong").await;
        let unknown = v.checks() - before - wrong;
        assert_eq!((wrong, unknown), (1, 1));
        // And the dummy hash has the stored hashes' parameters: the same cost.
        let stored = creds.hash_of("env-1").unwrap_or_default();
        let params = |h: &str| h.rsplitn(3, '$').nth(2).map(str::to_owned);
        assert_eq!(params(dummy_hash()), params(stored));
    }

    #[tokio::test]
    async fn a_cached_success_does_not_outlive_a_password_change() {
        let v = Verifier::default();
        let old = file_with("env-1", "old");
        assert_eq!(v.verify(&old, "env-1", b"old").await, Ok(()));
        let new = file_with("env-1", "new");
        assert_eq!(
            v.verify(&new, "env-1", b"old").await,
            Err(PasswordRefusal::WrongPassword)
        );
        assert_eq!(v.verify(&new, "env-1", b"new").await, Ok(()));
    }

    #[test]
    fn the_file_round_trips_and_bad_lines_name_their_line() {
        let creds = file_with("env-1", "pw");
        let text = creds.to_text();
        assert_eq!(Credentials::parse(&text, Path::new("f")).unwrap(), creds);
        let cases = [
            ("no-colon", "not device_id:hash"),
            (
                "bad/id:$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
                "device id",
            ),
            ("env-1:plaintext", "not a PHC password hash"),
            (
                "env-1:$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                "is not argon2id",
            ),
        ];
        for (line, expected) in cases {
            let err = Credentials::parse(&format!("# c\n\n{line}\n"), Path::new("f"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("line 3") && err.contains(expected),
                "{line}: {err}"
            );
        }
        let twice = format!("{text}{}", text.lines().last().unwrap());
        assert!(Credentials::parse(&twice, Path::new("f"))
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
    }

    #[tokio::test]
    async fn many_devices_are_hashed_at_once_and_a_bad_id_changes_nothing() {
        let mut c = Credentials::default();
        let pairs: Vec<(String, String)> = (0..5)
            .map(|i| (format!("d-{i}"), format!("pw-{i}")))
            .collect();
        c.set_many(&pairs).unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(Verifier::default().verify(&c, "d-3", b"pw-3").await, Ok(()));
        let bad = vec![
            ("ok".to_owned(), "x".to_owned()),
            ("no/pe".to_owned(), "x".to_owned()),
        ];
        assert!(c.set_many(&bad).is_err());
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn an_empty_password_is_refused() {
        assert!(matches!(
            Credentials::default().set("env-1", ""),
            Err(CredentialsError::EmptyPassword)
        ));
    }
}
