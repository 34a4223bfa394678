//! `--metrics-listen ADDR`: the run's metrics at `GET /metrics`
//! (OpenMetrics text) while the run lasts, for Prometheus to scrape. Any
//! other path is 404, any other method 405. Plain HTTP: bind it to
//! loopback or a cluster-internal address (it holds counts only, no
//! personal data, but nothing needs it outside).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::RunMetrics;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A bound `/metrics` server; stops when `stop` is cancelled.
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` (a failure is the caller's exit 2: nothing sent yet)
    /// and serves `metrics` until [`MetricsServer::stop`].
    pub async fn start(addr: SocketAddr, metrics: RunMetrics) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => break,
                        a = listener.accept() => a,
                    };
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    };
                    let metrics = metrics.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let metrics = metrics.clone();
                            async move { Ok::<_, Infallible>(answer(&req, &metrics)) }
                        });
                        let conn =
                            http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                        }
                    });
                }
            })
        };
        tracing::info!("metrics served at http://{addr}/metrics");
        Ok(MetricsServer { addr, stop, task })
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn answer(req: &Request<hyper::body::Incoming>, metrics: &RunMetrics) -> Response<Full<Bytes>> {
    let (status, body, kind) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") | (&Method::HEAD, "/metrics") => {
            (StatusCode::OK, metrics.render_openmetrics(), CONTENT_TYPE)
        }
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only\n".to_string(),
            "text/plain",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "kycshare serves /metrics only\n".to_string(),
            "text/plain",
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
