//! Automatic certificates (`[acme]`, RFC 8555): one certificate for the configured domains,
//! obtained from an ACME CA (Let's Encrypt by default) when there is none, renewed two thirds
//! into its lifetime, kept on disk with the account key, and put in force for new handshakes
//! without a restart or a dropped connection.
//!
//! [`AcmeState`] is what the rest of the gateway sees, shared for the life of the process: the
//! certificate in force (`tls.rs`' resolver presents it for the domains), the challenge answers
//! (`proxy.rs` serves HTTP-01 tokens at `/.well-known/acme-challenge/` on any listener; the
//! resolver presents TLS-ALPN-01 certificates to a validator asking for `acme-tls/1`), and the
//! last error, for operators and tests. [`start`] runs the one task that talks to the CA: it
//! waits until renewal is due (`schedule.rs`, pure), obtains a certificate (`order.rs`), and
//! after a failure logs one error line saying why, what keeps serving and when it tries again.
//!
//! The protocol itself (JWS, nonces, polling) is instant-acme's, written by rustls' maintainers;
//! fcgate owns what is specific to a gateway: which challenge, where its answer is served,
//! storage and the schedule. (rustls-acme would own the certificate resolver and the cache
//! format, and answers TLS-ALPN-01 only.)
//!
//! Files in `acme.storage`: `account.json` (the account key and URL, with the directory it
//! belongs to: another directory gets a new account), `certificate.pem` (the chain) and
//! `certificate.key`, all written to a temporary file and renamed, keys with mode 0600.

mod order;
mod schedule;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{AcmeSettings, CertificateFiles};
use crate::tls::{LoadedCertificate, ManagedCertificates, TlsError};

pub use order::AcmeError;
pub use schedule::Validity;

/// The path prefix of HTTP-01 validation requests (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The longest single sleep of the renewal task: the schedule is looked at again at least this
/// often, so a clock that jumps (a suspended machine) delays renewal by an hour at most.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// A certificate obtained (or loaded from storage) and in force.
struct Issued {
    key: Arc<CertifiedKey>,
    loaded: LoadedCertificate,
}

/// The ACME side of the gateway, shared by the renewal task, the TLS resolver and the HTTP
/// front.
pub struct AcmeState {
    settings: AcmeSettings,
    current: ArcSwapOption<Issued>,
    /// HTTP-01: token → key authorization, while a validation is pending.
    http01: Mutex<HashMap<String, String>>,
    /// TLS-ALPN-01: domain → the self-signed validation certificate, while pending.
    tls_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    last_error: Mutex<Option<String>>,
    obtained: std::sync::atomic::AtomicU64,
}

impl AcmeState {
    /// The state for `settings`, with the certificate stored by an earlier run in force if it is
    /// still valid and covers every domain (otherwise it is obtained anew once [`start`]ed).
    pub fn load(settings: &AcmeSettings) -> Arc<AcmeState> {
        let state = Arc::new(AcmeState {
            settings: settings.clone(),
            current: ArcSwapOption::empty(),
            http01: Mutex::new(HashMap::new()),
            tls_alpn01: Mutex::new(HashMap::new()),
            last_error: Mutex::new(None),
            obtained: std::sync::atomic::AtomicU64::new(0),
        });
        let files = stored_certificate(&settings.storage);
        if files.cert.exists() {
            match crate::tls::load_certificate_files(&files) {
                Ok((key, loaded)) => state.install(key, loaded),
                Err(error) => tracing::warn!(
                    "ACME: the stored certificate is not usable ({error}); a new one will be obtained"
                ),
            }
        }
        state
    }

    /// The configuration it was built from.
    pub fn settings(&self) -> &AcmeSettings {
        &self.settings
    }

    /// The certificate for `name`, if it is one of the domains and a certificate is in force.
    pub fn certificate_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let covered = self
            .settings
            .domains
            .iter()
            .any(|domain| domain.eq_ignore_ascii_case(name));
        if !covered {
            return None;
        }
        self.certificate()
    }

    /// The certificate in force, whatever the name.
    pub fn certificate(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .as_ref()
            .map(|issued| Arc::clone(&issued.key))
    }

    /// The certificate in force, as loaded (names, validity, file).
    pub fn certificate_facts(&self) -> Option<LoadedCertificate> {
        self.current
            .load()
            .as_ref()
            .map(|issued| issued.loaded.clone())
    }

    /// The answer to an HTTP-01 validation request for `token`, while one is pending.
    pub fn http01_answer(&self, token: &str) -> Option<String> {
        lock(&self.http01).get(token).cloned()
    }

    /// The TLS-ALPN-01 validation certificate for `name`, while a validation is pending.
    pub fn tls_alpn01_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.tls_alpn01)
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Why the last attempt failed; `None` once one succeeds.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// How many certificates this process obtained from the CA.
    pub fn obtained(&self) -> u64 {
        self.obtained.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The validity of the certificate in force, if it covers every domain: what the schedule
    /// renews from. `None` makes the next attempt immediate.
    fn validity(&self) -> Option<Validity> {
        let current = self.current.load();
        let issued = current.as_ref()?;
        let covers_all = self
            .settings
            .domains
            .iter()
            .all(|domain| issued.loaded.names.contains(domain));
        covers_all.then_some(Validity {
            not_before: issued.loaded.not_before,
            not_after: issued.loaded.not_after,
        })
    }

    fn install(&self, key: Arc<CertifiedKey>, loaded: LoadedCertificate) {
        self.current.store(Some(Arc::new(Issued { key, loaded })));
    }

    fn set_http01(&self, token: String, answer: String) {
        lock(&self.http01).insert(token, answer);
    }

    fn set_tls_alpn01(&self, domain: String, certificate: Arc<CertifiedKey>) {
        lock(&self.tls_alpn01).insert(domain, certificate);
    }

    /// Forgets every pending validation's answer (the order is over, whichever way).
    fn clear_challenges(&self) {
        lock(&self.http01).clear();
        lock(&self.tls_alpn01).clear();
    }
}

impl ManagedCertificates for AcmeState {
    fn certificate_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        AcmeState::certificate_for(self, name)
    }

    fn certificate(&self) -> Option<Arc<CertifiedKey>> {
        AcmeState::certificate(self)
    }

    fn validation_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01_certificate(name)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the certificate obtained is kept.
fn stored_certificate(storage: &Path) -> CertificateFiles {
    CertificateFiles {
        cert: storage.join("certificate.pem"),
        key: storage.join("certificate.key"),
    }
}

/// Starts the renewal task: it obtains a certificate at once when there is none (or the stored
/// one does not cover every domain), then renews it when due, until `shutdown`.
pub fn start(state: Arc<AcmeState>, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = renew_forever(&state) => {}
            () = shutdown.cancelled() => {}
        }
        state.clear_challenges();
    })
}

async fn renew_forever(state: &AcmeState) {
    // instant-acme's HTTPS client asks rustls for the process's default crypto provider.
    let _ = crate::tls::crypto_provider().install_default();
    let settings = &state.settings;
    let domains = settings.domains.join(", ");
    let mut account = None;
    let mut failures = 0;
    loop {
        let wait = schedule::next_attempt_in(SystemTime::now(), state.validity(), failures);
        if !wait.is_zero() {
            tokio::time::sleep(wait.min(LONGEST_SLEEP)).await;
            continue;
        }
        tracing::info!(
            domains,
            directory = settings.directory,
            "ACME: asking for a certificate"
        );
        let result = order::obtain(state, &mut account).await;
        state.clear_challenges();
        match result {
            Ok((key, loaded)) => {
                failures = 0;
                *lock(&state.last_error) = None;
                state
                    .obtained
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    domains,
                    expires = %humantime::format_rfc3339_seconds(loaded.not_after),
                    "ACME: certificate obtained and in force"
                );
                state.install(key, loaded);
            }
            Err(error) => {
                failures += 1;
                // A failed account or a broken connection may be fixed by starting over.
                account = None;
                let retry = schedule::retry_delay(failures);
                let serving = match state.certificate_facts() {
                    Some(facts) => format!(
                        "the certificate valid until {} keeps serving",
                        humantime::format_rfc3339_seconds(facts.not_after)
                    ),
                    None => "no certificate for these names yet".to_owned(),
                };
                tracing::error!(
                    domains,
                    directory = settings.directory,
                    "ACME: obtaining a certificate failed: {error}; {serving}; trying again in {}",
                    humantime::format_duration(retry)
                );
                *lock(&state.last_error) = Some(error.to_string());
            }
        }
    }
}

/// Writes `contents` to `path` through a temporary file in the same directory (so a crash never
/// leaves half a key), with mode 0600 when `secret`.
fn write_atomically(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    let mode = if secret { 0o600 } else { 0o644 };
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// Creates `storage` (mode 0700: it holds keys) if it does not exist.
fn create_storage(storage: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(storage)?;
    Ok(storage.to_owned())
}

impl From<TlsError> for AcmeError {
    fn from(error: TlsError) -> Self {
        AcmeError::Certificate(error)
    }
}
