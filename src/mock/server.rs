//! The server: TLS (rustls, ring), the accept loop, one HTTP/1 connection
//! per task, each request handed to [`banxa::handle`](super::banxa::handle),
//! and the graceful shutdown.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::banxa::handle;
use super::shared::Shared;
use super::TlsPem;

/// How long shutdown waits for answers in progress before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl TlsPem {
    /// A TLS acceptor (rustls, ring) for this certificate and key.
    pub(super) fn acceptor(&self) -> io::Result<tokio_rustls::TlsAcceptor> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls;
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("TLS {what}: {e}"))
        };
        let certs = CertificateDer::pem_slice_iter(&self.cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate is not PEM", &e))?;
        if certs.is_empty() {
            return Err(bad("certificate", &"no CERTIFICATE block in the PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| bad("private key is not PEM", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("configuration", &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate and key", &e))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    match &tls {
                        None => {
                            connections.spawn(serve_connection(stream, shared));
                        }
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            connections.spawn(async move {
                                // A client that refuses our certificate (or
                                // never finishes the handshake) is dropped.
                                let handshake = tokio::time::timeout(
                                    Duration::from_secs(10),
                                    acceptor.accept(stream),
                                );
                                if let Ok(Ok(tls_stream)) = handshake.await {
                                    serve_connection(tls_stream, shared).await;
                                }
                            });
                        }
                    }
                }
                // Out of descriptors and the like: back off, do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shared.shutting_down() => break,
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drained).await;
    connections.shutdown().await;
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler = Arc::clone(&shared);
    let service = service_fn(move |req| {
        let shared = Arc::clone(&handler);
        async move { handle(&shared, req).await }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shared.shutting_down() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
