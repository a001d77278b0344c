//! One HTTP/1.1 request over a connected TCP stream, in clear or TLS (rustls), with hyper 1.
//! The caller decides where the stream was connected (the target's network namespace for the
//! API, the agent's own for notify URLs).
use std::{path::Path, sync::Arc, time::Duration};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::net::TcpStream;

/// The largest response body read (silence lists of a busy Alertmanager stay far below).
pub const MAX_BODY: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("reading CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("HTTP: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("reading the response body: {0}")]
    Body(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// TLS settings of one destination.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl Tls {
    /// Mozilla's roots (compiled in), or the certificates of `ca_file` only.
    pub fn new(ca_file: Option<&Path>, server_name: &str) -> Result<Self, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let ca = |reason: String| HttpError::Ca {
                    path: path.display().to_string(),
                    reason,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| ca(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ca(e.to_string()))?;
                if certs.is_empty() {
                    return Err(ca("no certificate in it".into()));
                }
                for c in certs {
                    roots.add(c).map_err(|e| ca(e.to_string()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Tls(std::io::Error::other(e)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = server_name.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| HttpError::ServerName(server_name.to_owned()))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// Sends `request` on `stream` (through TLS when `tls` is given); the status and body, read
/// to at most [`MAX_BODY`] bytes, all within `timeout`.
pub async fn send(
    stream: TcpStream,
    tls: Option<&Tls>,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(u16, Bytes), HttpError> {
    let work = async {
        match tls {
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(HttpError::Tls)?;
                exchange(TokioIo::new(stream), request).await
            }
            None => exchange(TokioIo::new(stream), request).await,
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> Result<(u16, Bytes), HttpError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender.send_request(request).await;
    let result = async {
        let response = response?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| HttpError::Body(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}
