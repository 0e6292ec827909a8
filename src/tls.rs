//! TLS with rustls (ring provider, passed explicitly everywhere): the
//! recording proxy's listener (`record --tls-cert/--tls-key`, ALPN h2 and
//! http/1.1), and the client side of the proxy's upstream and of replay
//! targets (webpki roots, `--ca-file`, `--insecure-skip-verify`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The connector every HTTP client of tapedeck uses: plain http, or https
/// with [`ClientTls`].
pub type Connector = HttpsConnector<HttpConnector>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The listener's certificate and key, read from PEM files; ALPN offers h2
/// and http/1.1.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no CERTIFICATE block; pass the PEM certificate chain",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "--tls-key {}: {e}; pass the PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key do not form a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How clients verify the servers they connect to.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Extra trusted roots (PEM), besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (self-signed staging); warned once.
    pub insecure_skip_verify: bool,
}

impl ClientTls {
    /// The rustls client configuration (the connector sets ALPN: h2 and
    /// http/1.1).
    ///
    /// # Errors
    /// When the CA file cannot be read or holds no certificate.
    pub fn config(&self) -> Result<ClientConfig, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = if self.insecure_skip_verify {
            static WARNED: Once = Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "--insecure-skip-verify: server certificates are not checked; use it only against staging"
                );
            });
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = &self.ca_file {
                let mut added = 0;
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("--ca-file {}: {e}", path.display()))?
                {
                    let cert = cert.map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                    added += 1;
                }
                if added == 0 {
                    return Err(format!(
                        "--ca-file {}: no CERTIFICATE block; pass the CA's PEM certificate",
                        path.display()
                    ));
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(config)
    }

    /// A connector for http:// and https:// URLs; TCP_NODELAY on, connect
    /// timeout `connect_timeout`.
    ///
    /// # Errors
    /// As [`ClientTls::config`].
    pub fn connector(&self, connect_timeout: std::time::Duration) -> Result<Connector, String> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(false);
        Ok(HttpsConnectorBuilder::new()
            .with_tls_config(self.config()?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http))
    }
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

/// The rustls error behind a client failure, if TLS is what failed.
pub fn failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = next {
        if let Some(t) = s.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        // io::Error's source() skips the error it wraps (hyper-rustls
        // wraps tokio-rustls's io::Error in another): step into it.
        next = match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    None
}
