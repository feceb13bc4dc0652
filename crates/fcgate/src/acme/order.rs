//! One certificate order with the CA, start to finish: the account (loaded from storage or
//! created), the order for every domain, one challenge per authorization answered by the
//! gateway itself, the wait for validation, finalization with a new key, and the chain stored
//! and loaded as at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use serde::{Deserialize, Serialize};

use super::{create_storage, stored_certificate, write_atomically, AcmeState};
use crate::config::{AcmeChallenge, AcmeSettings, CertificateFiles};
use crate::tls::{LoadedCertificate, TlsError};

/// How long validation and issuance may take before the attempt counts as failed.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an attempt to obtain a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// Talking to the CA failed, or it answered with a problem.
    #[error("{0}")]
    Protocol(#[from] instant_acme::Error),
    /// The storage directory or a file in it could not be read or written.
    #[error("acme.storage: {}: {error}", path.display())]
    Storage {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The CA offered no challenge fcgate answers for a domain.
    #[error("the CA offers {offered} for {domain}, and fcgate answers only {answered}")]
    NoChallenge {
        /// The domain.
        domain: String,
        /// What the CA offered.
        offered: String,
        /// What `acme.challenges` allows.
        answered: String,
    },
    /// Validation failed: the CA could not verify the answer.
    #[error("validation failed: {0}")]
    Validation(String),
    /// An authorization the order needs is neither pending nor valid.
    #[error("the authorization for {domain} is {status}")]
    Authorization {
        /// The domain.
        domain: String,
        /// Its status.
        status: String,
    },
    /// Making the TLS-ALPN-01 validation certificate failed.
    #[error("making the tls-alpn-01 certificate: {0}")]
    ChallengeCertificate(String),
    /// The certificate the CA issued does not load.
    #[error("the certificate issued does not load: {0}")]
    Certificate(TlsError),
}

/// `account.json`: the account's credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Obtains a certificate for every domain of `state`'s settings; `account` is reused between
/// attempts once loaded or created.
pub(super) async fn obtain(
    state: &AcmeState,
    account: &mut Option<Account>,
) -> Result<(Arc<CertifiedKey>, LoadedCertificate), AcmeError> {
    let settings = &state.settings;
    let storage = create_storage(&settings.storage).map_err(|error| AcmeError::Storage {
        path: settings.storage.clone(),
        error,
    })?;
    let account = match account {
        Some(account) => account,
        None => account.insert(load_or_create_account(settings, &storage).await?),
    };
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|domain| Identifier::Dns(domain.clone()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    answer_challenges(state, &mut order).await?;
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT);
    match order.poll_ready(&retries).await {
        Ok(OrderStatus::Ready) => {}
        // The order went invalid: the CA's problem names the URL it tried; each challenge's
        // own error says which domain and which challenge, which is what an operator needs.
        Ok(_) | Err(instant_acme::Error::Api(_)) => {
            return Err(AcmeError::Validation(explain_failure(&mut order).await))
        }
        Err(other) => return Err(other.into()),
    }
    // instant-acme makes the key (ECDSA P-256) and the CSR for the order's names.
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&retries).await?;
    store_and_load(&storage, &chain_pem, &key_pem)
}

async fn load_or_create_account(
    settings: &AcmeSettings,
    storage: &Path,
) -> Result<Account, AcmeError> {
    let builder = || match &settings.directory_ca {
        Some(pem) => Account::builder_with_root(pem),
        None => Account::builder(),
    };
    let path = storage.join("account.json");
    let stored = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<StoredAccount>(&bytes).ok())
        .filter(|stored| stored.directory == settings.directory);
    if let Some(stored) = stored {
        return Ok(builder()?.from_credentials(stored.credentials).await?);
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await?;
    let stored = StoredAccount {
        directory: settings.directory.clone(),
        credentials,
    };
    let json = serde_json::to_vec_pretty(&stored).map_err(|error| AcmeError::Storage {
        path: path.clone(),
        error: std::io::Error::other(error),
    })?;
    write_atomically(&path, &json, true).map_err(|error| AcmeError::Storage { path, error })?;
    tracing::info!(account = account.id(), "ACME: account created");
    Ok(account)
}

/// Puts up an answer for one challenge of every pending authorization and tells the CA it is
/// ready.
async fn answer_challenges(state: &AcmeState, order: &mut Order) -> Result<(), AcmeError> {
    let settings = &state.settings;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let domain = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            // Validated recently for this account: nothing to answer.
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(AcmeError::Authorization {
                    domain,
                    status: format!("{other:?}").to_lowercase(),
                })
            }
        }
        let offered: Vec<ChallengeType> = authorization
            .challenges
            .iter()
            .map(|challenge| challenge.r#type.clone())
            .collect();
        let Some(kind) = settings
            .challenges
            .iter()
            .copied()
            .find(|kind| offered.contains(&challenge_type(*kind)))
        else {
            let names = |kinds: Vec<String>| kinds.join(", ");
            return Err(AcmeError::NoChallenge {
                domain,
                offered: names(offered.iter().map(|kind| format!("{kind:?}")).collect()),
                answered: names(
                    settings
                        .challenges
                        .iter()
                        .map(|kind| kind.name().to_owned())
                        .collect(),
                ),
            });
        };
        let Some(mut challenge) = authorization.challenge(challenge_type(kind)) else {
            continue;
        };
        let key_authorization = challenge.key_authorization();
        match kind {
            AcmeChallenge::Http01 => state.set_http01(
                challenge.token.clone(),
                key_authorization.as_str().to_owned(),
            ),
            AcmeChallenge::TlsAlpn01 => {
                let certificate =
                    validation_certificate(&domain, key_authorization.digest().as_ref())?;
                state.set_tls_alpn01(domain.to_ascii_lowercase(), certificate);
            }
        }
        tracing::debug!(
            domain,
            challenge = kind.name(),
            "ACME: challenge answer in place"
        );
        challenge.set_ready().await?;
    }
    Ok(())
}

fn challenge_type(kind: AcmeChallenge) -> ChallengeType {
    match kind {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

/// The self-signed certificate a TLS-ALPN-01 validator must see (RFC 8737 §3): the domain as
/// its only name and the SHA-256 of the key authorization in the critical acmeIdentifier
/// extension.
fn validation_certificate(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let failed = |error: &dyn std::fmt::Display| AcmeError::ChallengeCertificate(error.to_string());
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(|error| failed(&error))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|error| failed(&error))?;
    let certificate = params.self_signed(&key).map_err(|error| failed(&error))?;
    let signing_key = crate::tls::crypto_provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .map_err(|error| failed(&error))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![certificate.der().clone()],
        signing_key,
    )))
}

/// What the CA said about each failed challenge of an invalid order, e.g. "www.example.com:
/// http-01: Connection refused".
async fn explain_failure(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let domain = authorization.identifier().to_string();
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                let kind = match &challenge.r#type {
                    ChallengeType::Http01 => "http-01".to_owned(),
                    ChallengeType::TlsAlpn01 => "tls-alpn-01".to_owned(),
                    other => format!("{other:?}"),
                };
                reasons.push(format!("{domain}: {kind}: {problem}"));
            }
        }
    }
    if !reasons.is_empty() {
        return reasons.join("; ");
    }
    match &order.state().error {
        Some(problem) => problem.to_string(),
        None => "the order became invalid and the CA gave no reason".to_owned(),
    }
}

/// Writes the chain and key beside each other in `storage` and loads them with the same checks
/// as configured certificates. The chain goes in last: a crash between the two writes leaves
/// the old chain with a new key, which fails to load and is simply obtained again.
fn store_and_load(
    storage: &Path,
    chain_pem: &str,
    key_pem: &str,
) -> Result<(Arc<CertifiedKey>, LoadedCertificate), AcmeError> {
    let files: CertificateFiles = stored_certificate(storage);
    let storage_error = |path: &Path| {
        let path = path.to_owned();
        move |error| AcmeError::Storage { path, error }
    };
    write_atomically(&files.key, key_pem.as_bytes(), true).map_err(storage_error(&files.key))?;
    write_atomically(&files.cert, chain_pem.as_bytes(), false)
        .map_err(storage_error(&files.cert))?;
    Ok(crate::tls::load_certificate_files(&files)?)
}
