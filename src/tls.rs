//! TLS with rustls (ring provider, passed explicitly everywhere): the
//! recording proxy's listener (`record --tls-cert/--tls-key`, ALPN h2 and
//! http/1.1, client certificates required with `--tls-client-ca`), and the
//! client side of the proxy's upstream and of replay targets (webpki roots,
//! `--ca-file`, `--insecure-skip-verify`, a client certificate with
//! `--client-cert/--client-key`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The connector every HTTP client of tapedeck uses: plain http, or https
/// with [`ClientTls`].
pub type Connector = HttpsConnector<HttpConnector>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A PEM certificate chain and its private key, read for the options named
/// `cert_flag` and `key_flag` (they name the file in every error).
fn identity(
    cert: &Path,
    key: &Path,
    cert_flag: &str,
    key_flag: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert_flag} {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_flag} {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{cert_flag} {}: no CERTIFICATE block; pass the PEM certificate chain",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "{key_flag} {}: {e}; pass the PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    Ok((certs, key))
}

/// Adds the CA certificates of a PEM file (option `flag`) to `roots`.
fn add_roots(roots: &mut RootCertStore, path: &Path, flag: &str) -> Result<(), String> {
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?
    {
        let cert = cert.map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        added += 1;
    }
    if added == 0 {
        return Err(format!(
            "{flag} {}: no CERTIFICATE block; pass the CA's PEM certificate",
            path.display()
        ));
    }
    Ok(())
}

/// The listener's certificate and key, read from PEM files; ALPN offers h2
/// and http/1.1. With `client_ca`, every client must present a certificate
/// that CA signed (mutual TLS); others fail the handshake.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let (certs, key) = identity(cert, key, "--tls-cert", "--tls-key")?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            add_roots(&mut roots, path, "--tls-client-ca")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key do not form a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client certificate chain and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The certificate chain (`--client-cert`).
    pub cert: PathBuf,
    /// Its private key (`--client-key`).
    pub key: PathBuf,
}

/// How clients verify the servers they connect to, and what they show of
/// themselves.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Extra trusted roots (PEM), besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (self-signed staging); warned once.
    pub insecure_skip_verify: bool,
    /// The certificate to present when a server asks for one (mutual TLS).
    pub identity: Option<ClientIdentity>,
}

impl ClientTls {
    /// The rustls client configuration (the connector sets ALPN: h2 and
    /// http/1.1).
    ///
    /// # Errors
    /// When the CA file or the client certificate or key cannot be read or
    /// do not fit.
    pub fn config(&self) -> Result<ClientConfig, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.insecure_skip_verify {
            static WARNED: Once = Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "--insecure-skip-verify: server certificates are not checked; use it only against staging"
                );
            });
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        } else {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = &self.ca_file {
                add_roots(&mut roots, path, "--ca-file")?;
            }
            builder.with_root_certificates(roots)
        };
        match &self.identity {
            Some(id) => {
                let (certs, key) = identity(&id.cert, &id.key, "--client-cert", "--client-key")?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    format!("--client-cert/--client-key do not form a usable pair: {e}")
                })
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }

    /// A connector for http:// and https:// URLs; TCP_NODELAY on, connect
    /// timeout `connect_timeout`; ALPN offers h2 and http/1.1.
    ///
    /// # Errors
    /// As [`ClientTls::config`].
    pub fn connector(&self, connect_timeout: std::time::Duration) -> Result<Connector, String> {
        Ok(self
            .builder()?
            .enable_http1()
            .enable_http2()
            .wrap_connector(http_connector(connect_timeout)))
    }

    /// [`ClientTls::connector`] offering http/1.1 alone: for protocol
    /// upgrades (WebSocket), which HTTP/2 connections cannot carry.
    ///
    /// # Errors
    /// As [`ClientTls::config`].
    pub fn http1_connector(
        &self,
        connect_timeout: std::time::Duration,
    ) -> Result<Connector, String> {
        Ok(self
            .builder()?
            .enable_http1()
            .wrap_connector(http_connector(connect_timeout)))
    }

    fn builder(
        &self,
    ) -> Result<HttpsConnectorBuilder<hyper_rustls::builderstates::WantsProtocols1>, String> {
        Ok(HttpsConnectorBuilder::new()
            .with_tls_config(self.config()?)
            .https_or_http())
    }
}

fn http_connector(connect_timeout: std::time::Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    http
}

/// `--insecure-skip-verify`: every certificate is accepted; signatures are
/// still checked, so the handshake itself stays sound.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls error behind a client failure, if TLS is what failed, in
/// rustls's words.
pub fn failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = next {
        if let Some(t) = s.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        // io::Error's source() skips the error it wraps (hyper-rustls
        // wraps tokio-rustls's io::Error in another): step into it.
        let io = s.downcast_ref::<std::io::Error>();
        let inner = io.and_then(|io| io.get_ref());
        // An HTTP/2 connection keeps only the text of the I/O error that
        // ended it: rustls's error as a message of kind InvalidData.
        if let (Some(io), Some(inner)) = (io, inner)
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            let text = inner.to_string();
            if RUSTLS_PEER_ERRORS.iter().any(|p| text.starts_with(p)) {
                return Some(text);
            }
        }
        next = match inner {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    None
}

/// How rustls's messages for a failed peer begin (its `Display`).
const RUSTLS_PEER_ERRORS: [&str; 3] = [
    "received fatal alert: ",
    "invalid peer certificate: ",
    "peer sent no certificates",
];

/// What to do about a TLS failure towards a server (a [`failure`] text),
/// in the words of the options that fix it.
pub fn remedy(failure: &str) -> &'static str {
    const REFUSED_US: [&str; 5] = [
        "CertificateRequired",
        "BadCertificate",
        "UnknownCA",
        "CertificateUnknown",
        "HandshakeFailure",
    ];
    match failure.strip_prefix(RUSTLS_PEER_ERRORS[0]) {
        Some(alert) if REFUSED_US.contains(&alert) => {
            "the server wants a client certificate it trusts: pass --client-cert and --client-key"
        }
        _ => {
            "trust its CA with --ca-file, or pass --insecure-skip-verify for a self-signed staging server"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remedies_follow_rustls_words() {
        let refused = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(remedy(&refused.to_string()).contains("--client-cert"));
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(untrusted.to_string().starts_with(RUSTLS_PEER_ERRORS[1]));
        assert!(remedy(&untrusted.to_string()).contains("--ca-file"));
        // The text an HTTP/2 connection keeps is found like the error.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refused.to_string());
        assert_eq!(failure(&io), Some(refused.to_string()));
        let other = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad frame");
        assert_eq!(failure(&other), None);
    }
}
