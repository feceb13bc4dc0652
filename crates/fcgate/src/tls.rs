//! TLS for client connections: the certificates of `[tls]`, loaded and checked, and the rustls
//! server configuration every `tls` listener hands its handshakes to.
//!
//! The certificate presented is chosen by the name the client asks for (SNI): an exact name of
//! a certificate's subjectAltName (or its common name when it has none) first, then a wildcard
//! `*.example.com` covering exactly one more label, else the first certificate listed, as nginx
//! falls back to its default server. ALPN offers `h2` then `http/1.1`; TLS 1.2 and 1.3
//! (`tls.min_version` may drop 1.2). Resumption: stateless tickets (rustls' ticketer,
//! keys rotated every 6 hours) plus a session cache for clients without ticket support. A
//! reload (SIGHUP) loads the files again into a new configuration for new handshakes while
//! keeping the ticketer and cache, so sessions resume across it; connections already open
//! keep the certificate they started with. Every file problem (missing, unreadable, not PEM,
//! expired, not yet valid, a key that is not the certificate's) is an error naming the file,
//! at start, in `fcgate check`, and on reload, where it leaves the running certificates in
//! force.
//!
//! rustls does the TLS; this module only chooses the certificate, because rustls'
//! `ResolvesServerCertUsingSni` wants every name listed by hand and knows no wildcards.
//! x509-parser reads the names and validity out of each certificate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ProtocolVersion, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertificateFiles, TlsSettings, TlsVersion};

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737), offered when certificates are
/// managed by ACME.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Certificates obtained at run time (`acme.rs`), which the resolver consults after the
/// configured files. A trait so that this module, which `acme.rs` uses to load what it stores,
/// does not depend on it in turn.
pub trait ManagedCertificates: Send + Sync {
    /// The certificate for `name`, if it is one of the managed names and one is in force.
    fn certificate_for(&self, name: &str) -> Option<Arc<CertifiedKey>>;
    /// The certificate in force, for clients that send no name.
    fn certificate(&self) -> Option<Arc<CertifiedKey>>;
    /// The TLS-ALPN-01 validation certificate for `name`, while a validation is pending.
    fn validation_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>>;
}

/// ALPN protocols offered, in the server's order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Sessions remembered for TLS 1.2 clients that resume by session id rather than ticket
/// (about 100 bytes each).
const SESSION_CACHE_ENTRIES: usize = 10_000;

/// A certificate this close to its expiry is worth a warning at load.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Why the TLS certificates could not be put in force. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be opened or read.
    #[error("tls.certificates: cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Not a PEM file, or a broken one.
    #[error("tls.certificates: {} is not a valid PEM file: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        detail: String,
    },
    /// A PEM file without the item expected in it.
    #[error("tls.certificates: {} holds no {what}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// "certificate (-----BEGIN CERTIFICATE-----)" or "private key …".
        what: &'static str,
    },
    /// The certificate could not be parsed.
    #[error("tls.certificates: {}: cannot parse the certificate: {detail}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The certificate's validity ended.
    #[error("tls.certificates: the certificate in {} expired on {not_after}", path.display())]
    Expired {
        /// The file.
        path: PathBuf,
        /// When it expired (RFC 3339).
        not_after: String,
    },
    /// The certificate's validity has not begun.
    #[error(
        "tls.certificates: the certificate in {} is not valid before {not_before}",
        path.display()
    )]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// When it becomes valid (RFC 3339).
        not_before: String,
    },
    /// The key is of a kind rustls cannot sign with.
    #[error("tls.certificates: {}: unusable private key: {detail}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// The key is not the one the certificate was issued for.
    #[error(
        "tls.certificates: the private key in {} does not belong to the certificate in {}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration as a whole.
    #[error("TLS configuration: {0}")]
    Rustls(rustls::Error),
}

/// One certificate as loaded, for logs and the startup line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedCertificate {
    /// The certificate file.
    pub path: PathBuf,
    /// The names it is presented for (lowercase; wildcards as `*.example.com`).
    pub names: Vec<String>,
    /// The start of its validity.
    pub not_before: SystemTime,
    /// The end of its validity.
    pub not_after: SystemTime,
}

/// The TLS side of the listeners marked `tls`, for one generation of the configuration.
pub struct TlsSetup {
    acceptor: tokio_rustls::TlsAcceptor,
    certificates: Vec<LoadedCertificate>,
    resumption: Resumption,
}

/// What outlives reloads, so clients resume their sessions across one.
#[derive(Clone)]
struct Resumption {
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions + Send + Sync>,
}

impl TlsSetup {
    /// Loads `settings`' certificates and builds the server configuration; `None` when there
    /// are none (no `tls` listener). `previous` is the setup in force, whose session keys are
    /// kept.
    pub fn load(
        settings: &TlsSettings,
        acme: Option<&Arc<dyn ManagedCertificates>>,
        previous: Option<&TlsSetup>,
    ) -> Result<Option<TlsSetup>, TlsError> {
        if settings.certificates.is_empty() && acme.is_none() {
            return Ok(None);
        }
        let provider = Arc::new(crypto_provider());
        let now = SystemTime::now();
        let mut table = CertificateTable {
            acme: acme.cloned(),
            ..CertificateTable::default()
        };
        let mut certificates = Vec::with_capacity(settings.certificates.len());
        for files in &settings.certificates {
            let (key, loaded) = load_certificate(files, &provider, now)?;
            table.add(&loaded.names, key);
            certificates.push(loaded);
        }
        let resumption = match previous {
            Some(previous) => previous.resumption.clone(),
            None => Resumption {
                ticketer: rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Rustls)?,
                sessions: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
            },
        };
        let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(table));
        config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
        if acme.is_some() {
            // Last: a client offering it with h2 or http/1.1 gets those (RFC 8737 §6).
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        config.ticketer = Arc::clone(&resumption.ticketer);
        config.session_storage = Arc::clone(&resumption.sessions) as _;
        Ok(Some(TlsSetup {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificates,
            resumption,
        }))
    }

    /// What handshakes go through.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// The certificates in force, in the configured order.
    pub fn certificates(&self) -> &[LoadedCertificate] {
        &self.certificates
    }
}

/// What PHP learns about a TLS connection (Apache mod_ssl's `SSL_PROTOCOL` and `SSL_CIPHER`),
/// kept as static text so a connection's facts stay `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFacts {
    /// `TLSv1.3` or `TLSv1.2`.
    pub protocol: &'static str,
    /// The cipher suite's OpenSSL name, as Apache and nginx report it, e.g.
    /// `TLS_AES_128_GCM_SHA256` or `ECDHE-RSA-AES128-GCM-SHA256`.
    pub cipher: &'static str,
}

impl TlsFacts {
    /// The facts of a completed handshake.
    pub fn of(connection: &ServerConnection) -> TlsFacts {
        let protocol = match connection.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = connection
            .negotiated_cipher_suite()
            .map(|suite| openssl_name(suite.suite()))
            .unwrap_or("");
        TlsFacts { protocol, cipher }
    }
}

/// The OpenSSL name of each suite rustls' provider offers.
fn openssl_name(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            "ECDHE-ECDSA-CHACHA20-POLY1305"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other.as_str().unwrap_or(""),
    }
}

/// Reads one certificate chain and its key with the crypto provider TLS uses, and checks them
/// as at start (`acme.rs` loads what it stored and obtained this way).
pub(crate) fn load_certificate_files(
    files: &CertificateFiles,
) -> Result<(Arc<CertifiedKey>, LoadedCertificate), TlsError> {
    load_certificate(files, &crypto_provider(), SystemTime::now())
}

/// The crypto provider of every TLS configuration and key fcgate makes.
pub(crate) fn crypto_provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Reads one certificate chain and its key, and checks that they belong together and that the
/// certificate is valid `now`.
fn load_certificate(
    files: &CertificateFiles,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<(Arc<CertifiedKey>, LoadedCertificate), TlsError> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Missing {
            path: files.cert.clone(),
            what: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    };
    let (names, not_before, not_after) = describe(&files.cert, leaf)?;
    if now < not_before {
        return Err(TlsError::NotYetValid {
            path: files.cert.clone(),
            not_before: humantime::format_rfc3339_seconds(not_before).to_string(),
        });
    }
    if now > not_after {
        return Err(TlsError::Expired {
            path: files.cert.clone(),
            not_after: humantime::format_rfc3339_seconds(not_after).to_string(),
        });
    }
    if not_after.duration_since(now).unwrap_or_default() < EXPIRY_WARNING {
        tracing::warn!(
            certificate = %files.cert.display(),
            "TLS certificate expires on {}",
            humantime::format_rfc3339_seconds(not_after)
        );
    }
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::Key {
            path: files.key.clone(),
            detail: error.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // aws-lc-rs can say which public key every key it loads has; "unknown" would be a key kind
        // it cannot describe, which then fails at the first handshake rather than here.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
    }
    let loaded = LoadedCertificate {
        path: files.cert.clone(),
        names,
        not_before,
        not_after,
    };
    Ok((Arc::new(certified), loaded))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let items = CertificateDer::pem_file_iter(path).map_err(|error| pem_error(path, error))?;
    let chain = items
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(path, error))?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_owned(),
            what: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            path: path.to_owned(),
            what: "private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        },
        other => pem_error(path, other),
    })
}

fn pem_error(path: &Path, error: rustls_pki_types::pem::Error) -> TlsError {
    match error {
        rustls_pki_types::pem::Error::Io(error) => TlsError::Read {
            path: path.to_owned(),
            error,
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// The names a certificate is presented for, and its validity.
fn describe(
    path: &Path,
    der: &CertificateDer<'_>,
) -> Result<(Vec<String>, SystemTime, SystemTime), TlsError> {
    let invalid = |detail: String| TlsError::Certificate {
        path: path.to_owned(),
        detail,
    };
    let (_, certificate) =
        x509_parser::parse_x509_certificate(der).map_err(|error| invalid(error.to_string()))?;
    let mut names: Vec<String> = match certificate.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(name) => {
                    Some(name.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(error) => return Err(invalid(error.to_string())),
    };
    if names.is_empty() {
        // Browsers ignore the common name, but clients that send it as SNI should still get
        // this certificate rather than the default.
        names.extend(
            certificate
                .subject()
                .iter_common_name()
                .filter_map(|name| name.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let validity = certificate.validity();
    let time = |seconds: i64| match u64::try_from(seconds) {
        Ok(seconds) => SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
        Err(_) => SystemTime::UNIX_EPOCH,
    };
    Ok((
        names,
        time(validity.not_before.timestamp()),
        time(validity.not_after.timestamp()),
    ))
}

/// Which certificate answers which server name.
#[derive(Default)]
struct CertificateTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The first certificate configured: for clients that send no name, or one no certificate
    /// has.
    default: Option<Arc<CertifiedKey>>,
    /// The certificate obtained by ACME for its domains (after the files' names), and the
    /// TLS-ALPN-01 validation certificates.
    acme: Option<Arc<dyn ManagedCertificates>>,
}

impl std::fmt::Debug for CertificateTable {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CertificateTable")
            .field("exact", &self.exact.keys())
            .field("wildcard", &self.wildcard.keys())
            .field("acme", &self.acme.is_some())
            .finish()
    }
}

impl CertificateTable {
    /// Adds a certificate for its names; a name already taken keeps its first certificate.
    fn add(&mut self, names: &[String], key: Arc<CertifiedKey>) {
        for name in names {
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_owned()),
                None => self.exact.entry(name.clone()),
            }
            .or_insert_with(|| Arc::clone(&key));
        }
        self.default.get_or_insert(key);
    }

    fn for_name(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = name.and_then(|name| {
            // SNI is usually lowercase already; fold only when it is not.
            let folded;
            let name = if name.bytes().any(|byte| byte.is_ascii_uppercase()) {
                folded = name.to_ascii_lowercase();
                folded.as_str()
            } else {
                name
            };
            let found = self.exact.get(name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            });
            match found {
                Some(found) => Some(Arc::clone(found)),
                None => self.acme.as_ref()?.certificate_for(name),
            }
        });
        found
            .or_else(|| self.default.clone())
            .or_else(|| self.acme.as_ref()?.certificate())
    }
}

impl ResolvesServerCert for CertificateTable {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(acme) = &self.acme {
            let validating = client_hello
                .alpn()
                .is_some_and(|mut offered| offered.any(|protocol| protocol == ACME_TLS_ALPN));
            if validating {
                // Only a validation certificate answers acme-tls/1 (RFC 8737 §3), and only
                // while one is pending: otherwise the handshake fails.
                return acme.validation_certificate(client_hello.server_name()?);
            }
        }
        self.for_name(client_hello.server_name())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        // The table never looks inside a key: any signing key will do, told apart by pointer.
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let pkcs8 = ring_pkcs8();
        let signing = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(pkcs8.into()))
            .unwrap();
        Arc::new(CertifiedKey::new(Vec::new(), signing))
    }

    /// An Ed25519 PKCS#8 key (RFC 8410's example).
    fn ring_pkcs8() -> Vec<u8> {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&[
            0xd4, 0xee, 0x72, 0xdb, 0xf9, 0x13, 0x58, 0x4a, 0xd5, 0xb6, 0xd8, 0xf1, 0xf7, 0x69,
            0xf8, 0xad, 0x3a, 0xfe, 0x7c, 0x28, 0xcb, 0xf1, 0xd4, 0xfb, 0xe0, 0x97, 0xa8, 0x8f,
            0x44, 0x75, 0x58, 0x42,
        ]);
        der
    }

    fn table(entries: &[(&[&str], &Arc<CertifiedKey>)]) -> CertificateTable {
        let mut table = CertificateTable::default();
        for (names, key) in entries {
            let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
            table.add(&names, Arc::clone(key));
        }
        table
    }

    fn same(found: Option<Arc<CertifiedKey>>, expected: &Arc<CertifiedKey>) -> bool {
        found.is_some_and(|found| Arc::ptr_eq(&found, expected))
    }

    #[test]
    fn an_exact_name_wins_over_a_wildcard_and_the_default() {
        let (first, wildcard, exact) = (key(), key(), key());
        let table = table(&[
            (&["first.test"], &first),
            (&["*.example.com"], &wildcard),
            (&["www.example.com"], &exact),
        ]);
        assert!(same(table.for_name(Some("www.example.com")), &exact));
        assert!(same(table.for_name(Some("WWW.Example.COM")), &exact));
        assert!(same(table.for_name(Some("api.example.com")), &wildcard));
        assert!(same(table.for_name(Some("first.test")), &first));
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let (first, wildcard) = (key(), key());
        let table = table(&[(&["first.test"], &first), (&["*.example.com"], &wildcard)]);
        // Neither the bare domain nor two labels deeper (RFC 6125 §6.4.3).
        assert!(same(table.for_name(Some("example.com")), &first));
        assert!(same(table.for_name(Some("a.b.example.com")), &first));
    }

    #[test]
    fn no_name_or_an_unknown_one_gets_the_first_certificate() {
        let (first, second) = (key(), key());
        let table = table(&[(&["a.test"], &first), (&["b.test"], &second)]);
        assert!(same(table.for_name(None), &first));
        assert!(same(table.for_name(Some("c.test")), &first));
        assert!(same(table.for_name(Some("b.test")), &second));
    }

    #[test]
    fn a_name_listed_twice_keeps_its_first_certificate() {
        let (first, second) = (key(), key());
        let table = table(&[(&["a.test"], &first), (&["a.test", "b.test"], &second)]);
        assert!(same(table.for_name(Some("a.test")), &first));
        assert!(same(table.for_name(Some("b.test")), &second));
    }

    /// ACME's certificate for `acme.test`.
    struct Managed(Arc<CertifiedKey>);

    impl ManagedCertificates for Managed {
        fn certificate_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
            (name == "acme.test").then(|| Arc::clone(&self.0))
        }
        fn certificate(&self) -> Option<Arc<CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
        fn validation_certificate(&self, _name: &str) -> Option<Arc<CertifiedKey>> {
            None
        }
    }

    #[test]
    fn acme_names_come_after_the_files_and_stand_in_for_a_missing_default() {
        let (file, managed) = (key(), key());
        let mut with_files = table(&[(&["file.test", "acme.test"], &file)]);
        with_files.acme = Some(Arc::new(Managed(Arc::clone(&managed))));
        // A name both have: the configured file wins.
        assert!(same(with_files.for_name(Some("acme.test")), &file));
        assert!(same(with_files.for_name(None), &file));
        let mut acme_only = table(&[]);
        acme_only.acme = Some(Arc::new(Managed(Arc::clone(&managed))));
        assert!(same(acme_only.for_name(Some("acme.test")), &managed));
        assert!(same(acme_only.for_name(Some("other.test")), &managed));
        assert!(same(acme_only.for_name(None), &managed));
    }

    #[test]
    fn cipher_names_are_openssls() {
        assert_eq!(
            openssl_name(CipherSuite::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            openssl_name(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
    }
}
