//! Test certificates and TLS clients: a throwaway certificate authority (rcgen) that signs site
//! certificates with the names and validity a test asks for, written as PEM files the gateway's
//! `[tls]` settings and curl's `--cacert` can read, and rustls client configurations that
//! trust that authority alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// A certificate authority and the directory its files are written to (removed on drop).
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// A site certificate's files.
#[derive(Debug, Clone)]
pub struct SiteFiles {
    /// The certificate chain (the site's certificate, then the authority's).
    pub cert: PathBuf,
    /// The site's private key (PKCS#8).
    pub key: PathBuf,
}

impl SiteFiles {
    /// The `{ cert = "…", key = "…" }` entry of `tls.certificates`.
    pub fn toml_entry(&self) -> String {
        format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            self.cert.display(),
            self.key.display()
        )
    }
}

impl TestCa {
    /// A new authority, its certificate written to [`Self::ca_path`].
    pub fn new() -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fcgate test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let dir = tempfile::tempdir().context("a directory for test certificates")?;
        std::fs::write(dir.path().join("ca.pem"), issuer.pem())?;
        Ok(TestCa { issuer, dir })
    }

    /// The authority's certificate (PEM), for curl's `--cacert`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Where the files are written.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A certificate for `names` (DNS names, `*.` wildcards allowed), valid from a day ago for
    /// 90 days, written as `<stem>.pem` and `<stem>.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> anyhow::Result<SiteFiles> {
        let now = OffsetDateTime::now_utc();
        self.issue_valid(
            stem,
            names,
            now - Duration::days(1),
            now + Duration::days(90),
        )
    }

    /// As [`Self::issue`], valid from `not_before` to `not_after`.
    pub fn issue_valid(
        &self,
        stem: &str,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<SiteFiles> {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        let files = SiteFiles {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, certificate.pem() + &self.issuer.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }

    /// A rustls client configuration trusting only this authority and offering `alpn`
    /// (e.g. `[b"h2", b"http/1.1"]`; empty: no ALPN).
    pub fn client_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        client_config_trusting(&self.ca_path(), alpn)
    }
}

/// A rustls client configuration trusting only the CA certificate in the PEM file `root` (e.g.
/// the root an ACME test CA issues under) and offering `alpn`.
pub fn client_config_trusting(
    root: &Path,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(root)
        .with_context(|| format!("reading {}", root.display()))?;
    roots.add(ca)?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Connects to `addr` over TLS asking for `server_name` (SNI, and the name the certificate
/// must carry); the stream says which ALPN protocol and certificate the server chose.
pub async fn connect(
    addr: std::net::SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
        .with_context(|| format!("server name {server_name}"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr} as {server_name}"))
}
