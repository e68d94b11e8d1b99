//! TLS material, read and checked when the config loads (so a bad file is a config error and a
//! reload re-reads certificates): server configs for listeners, with the certificate chosen by
//! SNI, and client configs for upstreams. rustls with the ring provider.

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::ring::default_provider;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const ALPN_H2: &[u8] = b"h2";
pub(crate) const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A listener's TLS settings as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerTlsSpec {
    /// (certificate chain file, private key file), PEM. The first is the default certificate.
    pub(crate) certificates: Vec<(PathBuf, PathBuf)>,
    /// Verify client certificates against this CA bundle (mTLS).
    pub(crate) client_ca_file: Option<PathBuf>,
    /// With a client CA: reject clients without a certificate (`true`) or let them in.
    pub(crate) client_auth_required: bool,
    /// `true`: TLS 1.3 only; otherwise TLS 1.2 and 1.3.
    pub(crate) tls13_only: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in read_certs(path)? {
        store
            .add(cert)
            .map_err(|e| format!("{}: invalid CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// Picks the certificate for the name the client asked for: an exact name, then a wildcard
/// one label up, then the default (the first configured certificate, also used without SNI).
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(Arc::clone(&self.default));
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(Arc::clone(key));
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = self.wildcard.get(parent) {
                return Some(Arc::clone(key));
            }
        }
        Some(Arc::clone(&self.default))
    }
}

/// Builds a listener's server config, reading every file it names.
pub(crate) fn server_config(spec: &ListenerTlsSpec) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let mut keys = Vec::new();
    for (cert_file, key_file) in &spec.certificates {
        let chain = read_certs(cert_file)?;
        let key = read_key(key_file)?;
        let names: Vec<String> = webpki::EndEntityCert::try_from(&chain[0])
            .map_err(|e| format!("{}: invalid certificate: {e}", cert_file.display()))?
            .valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            format!(
                "{} and {} do not form a usable certificate and key: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
        keys.push((names, Arc::new(certified)));
    }
    let Some((_, default)) = keys.first() else {
        return Err("tls needs at least one certificate".into());
    };
    let mut resolver = SniResolver {
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        default: Arc::clone(default),
    };
    for (names, key) in &keys {
        for name in names {
            match name.strip_prefix("*.") {
                Some(parent) => resolver.wildcard.entry(parent.to_string()),
                None => resolver.exact.entry(name.clone()),
            }
            .or_insert_with(|| Arc::clone(key));
        }
    }
    let versions: &[&SupportedProtocolVersion] = if spec.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &spec.client_ca_file {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider);
            let verifier = if spec.client_auth_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// An upstream's TLS client: settings compare by value (and CA file content), so an unchanged
/// upstream keeps its pools across reloads.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTls {
    pub(crate) ca_file: Option<PathBuf>,
    ca_pem: Vec<u8>,
    /// The name to verify (and send as SNI); default: the request's host.
    pub(crate) server_name: Option<ServerName<'static>>,
    pub(crate) config: Arc<ClientConfig>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file
            && self.ca_pem == other.ca_pem
            && self.server_name == other.server_name
    }
}

impl UpstreamTls {
    /// `ca_file`: trust only this CA bundle; default: the Mozilla root set (webpki-roots).
    pub(crate) fn new(
        ca_file: Option<PathBuf>,
        server_name: Option<&str>,
        http2: bool,
    ) -> Result<UpstreamTls, String> {
        let (store, ca_pem) = match &ca_file {
            Some(path) => (
                roots(path)?,
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            None => (
                RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
                Vec::new(),
            ),
        };
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|_| format!("invalid server name {name:?}"))
            })
            .transpose()?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| format!("TLS verifier: {e}"))?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![if http2 { ALPN_H2 } else { ALPN_HTTP11 }.to_vec()];
        Ok(UpstreamTls {
            ca_file,
            ca_pem,
            server_name,
            config: Arc::new(config),
        })
    }
}
