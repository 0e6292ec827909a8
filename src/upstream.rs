//! An upstream or replay target: the URL it was given as, how to reach it
//! (TCP, TLS handshake, a start-up probe) and how a request target joins
//! its path prefix. Shared by the recording proxy and replay, and by
//! nothing else: it knows no capture, no session and no report.

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};

use crate::tls::ClientTls;

/// An upstream or target URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{url}`: {reason}")]
pub struct UpstreamError {
    /// What was given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Where requests go: scheme, authority and an optional path prefix.
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    prefix: String,
    text: String,
}

impl Upstream {
    /// Parses `http[s]://host[:port][/prefix]`.
    ///
    /// # Errors
    /// When the URL has no host, a scheme other than http or https, or a
    /// query.
    pub fn parse(url: &str) -> Result<Upstream, UpstreamError> {
        let err = |reason: &str| UpstreamError {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| err("not a URL; expected http://host:port"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| err("missing scheme; expected http://host:port"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(err("expected an http:// or https:// URL"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| err("missing host; expected http://host:port"))?;
        if uri.query().is_some() {
            return Err(err("an upstream URL cannot carry a query string"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Upstream {
            scheme,
            authority,
            prefix,
            text: url.trim_end_matches('/').to_string(),
        })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `host:port` of the upstream.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Whether it is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The TCP port: the URL's, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// Connects once, sending no request: a TCP connect, and with `tls` for
    /// an https:// upstream the TLS handshake too. A wrong address or CA
    /// then shows when a command starts, not as the first answers. (A TLS
    /// 1.3 server refuses a missing client certificate only after the
    /// handshake, so that does not show here.)
    ///
    /// # Errors
    /// What failed, in words that name the option that fixes it.
    pub async fn probe(&self, tls: Option<&ClientTls>, timeout: Duration) -> Result<(), String> {
        let host = self.authority.host();
        let connect = tokio::net::TcpStream::connect((host, self.port()));
        let tcp = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "no answer to a TCP connect within {}",
                    humantime::format_duration(timeout)
                ));
            }
        };
        let Some(tls) = tls.filter(|_| self.is_https()) else {
            return Ok(());
        };
        let handshake = self.tls_handshake(Arc::new(tls.config()?), tcp);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let failure = crate::tls::failure(&e).unwrap_or_else(|| e.to_string());
                Err(format!(
                    "TLS handshake failed: {failure}; {}",
                    crate::tls::remedy(&failure)
                ))
            }
            Err(_) => Err(format!(
                "no TLS handshake within {}",
                humantime::format_duration(timeout)
            )),
        }
    }

    /// The TLS handshake on a connection to the upstream, naming the
    /// upstream's host as the server.
    ///
    /// # Errors
    /// When the host is no TLS server name, or the handshake fails.
    pub async fn tls_handshake(
        &self,
        config: Arc<rustls::ClientConfig>,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let host = self.authority.host();
        let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host} is not a TLS server name: {e}"),
            )
        })?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    }

    /// The upstream URI for a request target (`/path?query`), with the
    /// upstream's path prefix in front.
    ///
    /// # Errors
    /// When the target is not a valid path and query.
    pub fn join(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let builder = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone());
        if self.prefix.is_empty() {
            builder.path_and_query(path_and_query).build()
        } else {
            builder
                .path_and_query(format!("{}{path_and_query}", self.prefix))
                .build()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_joins_its_path_prefix_and_defaults_its_port() {
        let up = Upstream::parse("https://chat.example:8443/api/").expect("url");
        assert_eq!(up.as_str(), "https://chat.example:8443/api");
        assert_eq!(up.port(), 8443);
        let uri = up.join("/rooms?x=1").expect("joins");
        assert_eq!(uri.to_string(), "https://chat.example:8443/api/rooms?x=1");
        assert_eq!(Upstream::parse("http://chat").expect("url").port(), 80);
    }

    #[test]
    fn an_unusable_url_names_the_problem() {
        let err = Upstream::parse("ftp://chat").expect_err("not http");
        assert_eq!(
            err.to_string(),
            "upstream `ftp://chat`: expected an http:// or https:// URL"
        );
        assert!(Upstream::parse("http://chat/?q=1").is_err());
    }
}
