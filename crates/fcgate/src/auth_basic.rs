//! HTTP Basic authentication (RFC 7617) for `auth_basic` rules: an htpasswd file of bcrypt
//! hashes, read when the configuration is loaded (a bad line is a config error naming the file
//! and line), and checked per request.
//!
//! bcrypt is deliberately slow (tens of milliseconds at `htpasswd -B`'s cost), so a check runs
//! on the blocking pool, at most two at a time (a flood of wrong passwords costs those two
//! threads, not the event loop), and a credential that was right is remembered until the next
//! reload rebuilds this, so a logged-in browser costs one hash, not one per request (Caddy does
//! the same). A name not in the file is checked against a dummy hash, so the answer's timing
//! does not tell which user names exist. Only bcrypt: htpasswd's MD5 (`$apr1$`), SHA-1 and
//! crypt(3) hashes are refused at load, as they are cheap to brute-force.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use http::HeaderValue;
use tokio::sync::Semaphore;

/// bcrypt checks running at once.
const CONCURRENT_CHECKS: usize = 2;
/// Credentials remembered as right; the set starts again empty when full.
const REMEMBERED: usize = 1024;

/// One `auth_basic` realm and its users.
pub struct AuthBasic {
    realm: String,
    file: PathBuf,
    /// User name → bcrypt hash.
    users: HashMap<String, String>,
    challenge: HeaderValue,
    checks: Arc<Semaphore>,
    /// `Authorization` values found right since load.
    verified: Mutex<HashSet<String>>,
}

/// What a request's credentials came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Right: the user's name, for REMOTE_USER and the access log.
    Granted(String),
    /// 401; why, for the log line.
    Refused(&'static str),
}

impl AuthBasic {
    /// Reads `file` for `realm`; the error names the file and what is wrong with it.
    pub fn load(realm: &str, file: &Path) -> Result<AuthBasic, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|error| format!("cannot read `{}`: {error}", file.display()))?;
        let users =
            parse_htpasswd(&text).map_err(|error| format!("`{}` {error}", file.display()))?;
        let quoted = realm.replace(['\\', '"'], "");
        let challenge =
            HeaderValue::try_from(format!("Basic realm=\"{quoted}\", charset=\"UTF-8\""))
                .map_err(|_| format!("the realm `{realm}` cannot go in a header"))?;
        Ok(AuthBasic {
            realm: realm.to_owned(),
            file: file.to_path_buf(),
            users,
            challenge,
            checks: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// The `WWW-Authenticate` value of a 401.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }

    /// Checks a request's `Authorization` header.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> AuthOutcome {
        let Some(value) = authorization else {
            return AuthOutcome::Refused("no credentials");
        };
        let Some((user, password)) = credentials(value) else {
            return AuthOutcome::Refused("malformed Authorization header");
        };
        let key = value.to_str().unwrap_or_default().to_owned();
        if self.remembers(&key) {
            return AuthOutcome::Granted(user);
        }
        let hash = match self.users.get(&user) {
            Some(hash) => hash.clone(),
            None => dummy_hash().to_owned(),
        };
        let known = self.users.contains_key(&user);
        // Closed only if the semaphore is, which never happens: it lives as long as `self`.
        let Ok(_permit) = self.checks.acquire().await else {
            return AuthOutcome::Refused("shutting down");
        };
        let right = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        match (known, right) {
            (true, true) => {
                self.remember(key);
                AuthOutcome::Granted(user)
            }
            (true, false) => AuthOutcome::Refused("wrong password"),
            (false, _) => AuthOutcome::Refused("unknown user"),
        }
    }

    fn remembers(&self, key: &str) -> bool {
        self.verified
            .lock()
            .is_ok_and(|verified| verified.contains(key))
    }

    fn remember(&self, key: String) {
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= REMEMBERED {
                verified.clear();
            }
            verified.insert(key);
        }
    }
}

impl std::fmt::Debug for AuthBasic {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hashes.
        formatter
            .debug_struct("AuthBasic")
            .field("realm", &self.realm)
            .field("file", &self.file)
            .field("users", &self.users.len())
            .finish()
    }
}

/// Two loads of the same file are the same setting (a reload compares configurations).
impl PartialEq for AuthBasic {
    fn eq(&self, other: &Self) -> bool {
        self.realm == other.realm && self.file == other.file && self.users == other.users
    }
}

impl Eq for AuthBasic {}

/// `user:hash` lines; blank lines and `#` comments are skipped.
fn parse_htpasswd(text: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = number + 1;
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {number}: not `user:hash`"));
        };
        let scheme = ["$2y$", "$2b$", "$2a$"]
            .iter()
            .any(|prefix| hash.starts_with(prefix));
        if !scheme {
            let kind = if hash.starts_with("$apr1$") {
                "an MD5 ($apr1$)"
            } else if hash.starts_with("{SHA}") {
                "a SHA-1 ({SHA})"
            } else {
                "a crypt(3) or plain-text"
            };
            return Err(format!(
                "line {number}: `{user}` has {kind} hash; only bcrypt is accepted \
                 (write it with `htpasswd -B`)"
            ));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    if users.is_empty() {
        return Err("holds no user".to_owned());
    }
    Ok(users)
}

/// `Basic base64(user:password)`; the scheme is case-insensitive (RFC 9110 §11.1).
fn credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A hash of nothing anyone types, so an unknown user costs what a known one does.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        bcrypt::hash("no user has this password", bcrypt::DEFAULT_COST)
            .unwrap_or_else(|_| "$2b$10$invalid".to_owned())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn basic(user_password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_password);
        HeaderValue::try_from(format!("Basic {encoded}")).unwrap()
    }

    fn realm_with(password: &str) -> (tempfile::NamedTempFile, AuthBasic) {
        let hash = bcrypt::hash(password, 4).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("# admins\n\nalice:{hash}\n")).unwrap();
        let auth = AuthBasic::load("Admin \"area\"", file.path()).unwrap();
        (file, auth)
    }

    #[tokio::test]
    async fn good_bad_missing_and_malformed_credentials() {
        let (_file, auth) = realm_with("s3cret");
        assert_eq!(
            auth.check(Some(&basic("alice:s3cret"))).await,
            AuthOutcome::Granted("alice".into())
        );
        // Remembered: the same answer without a hash.
        assert_eq!(
            auth.check(Some(&basic("alice:s3cret"))).await,
            AuthOutcome::Granted("alice".into())
        );
        assert_eq!(
            auth.check(Some(&basic("alice:wrong"))).await,
            AuthOutcome::Refused("wrong password")
        );
        assert_eq!(
            auth.check(Some(&basic("mallory:s3cret"))).await,
            AuthOutcome::Refused("unknown user")
        );
        assert_eq!(
            auth.check(None).await,
            AuthOutcome::Refused("no credentials")
        );
        for malformed in ["Basic", "Basic !!!", "Bearer abc", "Basic YWxpY2U="] {
            let value = HeaderValue::from_static(malformed);
            assert_eq!(
                auth.check(Some(&value)).await,
                AuthOutcome::Refused("malformed Authorization header"),
                "{malformed}"
            );
        }
        let lowercase = HeaderValue::try_from(
            basic("alice:s3cret")
                .to_str()
                .unwrap()
                .replace("Basic", "basic"),
        )
        .unwrap();
        assert!(matches!(
            auth.check(Some(&lowercase)).await,
            AuthOutcome::Granted(_)
        ));
        assert_eq!(
            auth.challenge(),
            "Basic realm=\"Admin area\", charset=\"UTF-8\""
        );
    }

    #[test]
    fn only_bcrypt_files_load() {
        assert!(parse_htpasswd("bob:$apr1$abc$def")
            .unwrap_err()
            .contains("MD5"));
        assert!(parse_htpasswd("bob:{SHA}abc")
            .unwrap_err()
            .contains("SHA-1"));
        assert!(parse_htpasswd("bob:plain").unwrap_err().contains("line 1"));
        assert!(parse_htpasswd("# nobody\n")
            .unwrap_err()
            .contains("no user"));
        assert!(parse_htpasswd("\nnocolon").unwrap_err().contains("line 2"));
        let users = parse_htpasswd("a:$2y$05$abc\nb:$2b$05$def\n").unwrap();
        assert_eq!(users.len(), 2);
        assert!(AuthBasic::load("x", Path::new("/nonexistent/htpasswd"))
            .unwrap_err()
            .contains("/nonexistent/htpasswd"));
    }
}
