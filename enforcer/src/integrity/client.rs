//! Reads one Alertmanager's API from inside its network namespace.
//!
//! The socket is created by a short-lived thread that joined the namespace (`setns`) and then
//! exits: a socket stays in the namespace it was created in, so the agent's own threads never
//! change namespace. The namespace is held by an open `/proc/<pid>/ns/net` descriptor taken
//! when the process was found, so a reused pid cannot redirect the watchdog.
use std::{fs::File, net::SocketAddr, os::fd::AsRawFd as _, path::Path, sync::Arc, time::Duration};

use base64::Engine as _;
use http_body_util::Full;
use hyper::{Request, body::Bytes};

use super::http::{self, HttpError, Tls};
use crate::policy::ApiSettings;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("opening {path}: {source}")]
    Namespace {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("joining the network namespace: {0}")]
    Setns(#[source] std::io::Error),
    #[error("reading {path}: {source}")]
    Secret {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("GET {path} answered HTTP {status}")]
    Status { path: String, status: u16 },
}

/// The API of one Alertmanager process.
pub struct ApiClient {
    netns: Arc<File>,
    connect: SocketAddr,
    /// `/` or `/prefix/`.
    prefix: String,
    tls: Option<Tls>,
    settings: ApiSettings,
    timeout: Duration,
}

impl ApiClient {
    /// `pid`'s network namespace, reached at `connect` under `prefix`.
    pub fn new(
        proc_root: &Path,
        pid: u32,
        connect: SocketAddr,
        prefix: String,
        settings: &ApiSettings,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let path = proc_root.join(pid.to_string()).join("ns/net");
        let netns = File::open(&path).map_err(|source| ClientError::Namespace {
            path: path.display().to_string(),
            source,
        })?;
        let tls = match &settings.tls {
            Some(t) => {
                let default_name = connect.ip().to_string();
                let name = t.server_name.as_deref().unwrap_or(&default_name);
                Some(Tls::new(t.ca_file.as_deref(), name)?)
            }
            None => None,
        };
        Ok(Self {
            netns: Arc::new(netns),
            connect,
            prefix,
            tls,
            settings: settings.clone(),
            timeout,
        })
    }

    /// `http://127.0.0.1:9093/` (no credentials).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.connect, self.prefix)
    }

    /// `GET {prefix}{path}`; the body of a 200 answer.
    pub async fn get(&self, path: &str) -> Result<Bytes, ClientError> {
        let stream = self.connect_in_namespace().await?;
        let full = format!("{}{path}", self.prefix);
        let mut request = Request::get(&full)
            .header(hyper::header::HOST, self.connect.to_string())
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::USER_AGENT, "enforcer-integrity-watchdog");
        if let Some(auth) = self.authorization()? {
            request = request.header(hyper::header::AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(HttpError::from)?;
        let (status, body) = http::send(stream, self.tls.as_ref(), request, self.timeout).await?;
        if status != 200 {
            return Err(ClientError::Status { path: full, status });
        }
        Ok(body)
    }

    /// The `Authorization` value; secrets are read at each request (rotation needs no reload).
    fn authorization(&self) -> Result<Option<String>, ClientError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|source| ClientError::Secret {
                    path: path.display().to_string(),
                    source,
                })
        };
        if let Some(b) = &self.settings.basic_auth {
            let password = read(&b.password_file)?;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{password}", b.username));
            return Ok(Some(format!("Basic {token}")));
        }
        if let Some(path) = &self.settings.bearer_token_file {
            return Ok(Some(format!("Bearer {}", read(path)?)));
        }
        Ok(None)
    }

    /// A TCP connection made from inside the process's network namespace.
    async fn connect_in_namespace(&self) -> Result<tokio::net::TcpStream, ClientError> {
        let netns = self.netns.clone();
        let addr = self.connect;
        let timeout = self.timeout;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("integrity-netns".into())
            .spawn(move || {
                let _ = tx.send(connect_in(&netns, addr, timeout));
            })
            .map_err(ClientError::Setns)?;
        let stream = rx
            .await
            .map_err(|_| ClientError::Setns(std::io::Error::other("connect thread ended")))??;
        stream
            .set_nonblocking(true)
            .map_err(|e| ClientError::Http(HttpError::Connect(e)))?;
        tokio::net::TcpStream::from_std(stream)
            .map_err(|e| ClientError::Http(HttpError::Connect(e)))
    }
}

/// Runs on a thread of its own, which ends right after: joins `netns`, connects.
fn connect_in(
    netns: &File,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<std::net::TcpStream, ClientError> {
    // SAFETY: setns on a descriptor we own; it changes only this thread's namespace, and this
    // thread exits when the function returns (nothing else runs on it).
    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(ClientError::Setns(std::io::Error::last_os_error()));
    }
    // A socket the API guard knows as the agent's own (whatever its `allow` list).
    crate::own_sockets::connect(addr, timeout).map_err(|e| ClientError::Http(HttpError::Connect(e)))
}
