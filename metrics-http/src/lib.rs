//! `GET /metrics` for `cops --metrics-listen` and `fims_server --metrics-listen`.
//!
//! [`spawn`] binds the address at once (so a bad address or a port in use is
//! an error at start, not a log line later) and serves on a thread of its own,
//! with a current-thread tokio runtime and hyper's HTTP/1 server: the program's
//! own loop never runs HTTP code. Each scrape calls the program's render
//! function for a fresh [`Registry`] (usually a collector over a snapshot of
//! its counters) and encodes it with `prometheus-client`:
//! - OpenMetrics 1.0 text when the scraper asks for it (`Accept:
//!   application/openmetrics-text`, as Prometheus does);
//! - the Prometheus text format 0.0.4 otherwise (curl, `promtool check
//!   metrics`, older scrapers).
//!
//! Only `GET`/`HEAD /metrics` is served (404 elsewhere, 405 for other
//! methods); a render error is a 503 with its text. At most
//! [`MAX_CONNECTIONS`] connections are served at once (more are closed at
//! accept), and a client has [`HEADER_TIMEOUT`] to send its request headers.
#![warn(missing_docs)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

/// The content type of OpenMetrics 1.0 text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Connections served at once at most.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a scrape gets: a registry to encode, or why there is none (503).
pub type Rendered = Pin<Box<dyn Future<Output = Result<Registry, String>> + Send>>;

/// Makes the registry of one scrape.
pub type Render = Arc<dyn Fn() -> Rendered + Send + Sync>;

/// The two exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS,
        }
    }
}

/// Encodes `registry` in `format`.
pub fn encode(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    match format {
        Format::Prometheus => prometheus_text::encode(&mut out, registry)?,
        Format::OpenMetrics => text::encode(&mut out, registry)?,
    }
    Ok(out)
}

/// Binds `addr` (e.g. `127.0.0.1:9632`; port 0 picks a free one) and serves
/// `GET /metrics` from a new thread named `name`; returns the bound address.
pub fn spawn(addr: &str, name: &str, render: Render) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(serve(listener, render)))?;
    Ok(local)
}

/// Accepts connections forever, each served on a task of its own.
async fn serve(listener: TcpListener, render: Render) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics: cannot use the listening socket");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: try again shortly.
                tracing::debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections; closed");
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, Arc::clone(&render)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "metrics: connection ended");
            }
            drop(permit);
        });
    }
}

/// A plain-text response.
fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(text.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn answer(
    req: Request<Incoming>,
    render: Render,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ));
    }
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let registry = match render().await {
        Ok(r) => r,
        Err(e) => return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))),
    };
    let body = match encode(&registry, format) {
        Ok(b) => b,
        Err(_) => {
            let msg = "cannot encode the metrics\n";
            return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, msg));
        }
    };
    let mut r = Response::new(Full::new(if head {
        Bytes::new()
    } else {
        Bytes::from(body)
    }));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn counter_registry() -> Registry {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        c.inc_by(7);
        r.register("demo_things", "Things seen.", c);
        r
    }

    #[test]
    fn negotiates_the_format_and_serves_only_metrics() {
        let render: Render = Arc::new(|| Box::pin(async { Ok(counter_registry()) }));
        let addr = spawn("127.0.0.1:0", "metrics-test", render).unwrap();
        let plain = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
        assert!(plain.contains("text/plain; version=0.0.4"), "{plain}");
        assert!(
            plain.contains("# TYPE demo_things_total counter\n"),
            "{plain}"
        );
        assert!(plain.contains("\ndemo_things_total 7\n"), "{plain}");
        let om = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nConnection: close\r\n\r\n",
        );
        assert!(om.contains(OPENMETRICS), "{om}");
        assert!(om.contains("# TYPE demo_things counter\n"), "{om}");
        assert!(om.trim_end().ends_with("# EOF"), "{om}");
        let nf = get(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
        let post = get(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let junk = get(addr, "\x01\x02 nonsense\r\n\r\n");
        assert!(
            junk.is_empty() || junk.starts_with("HTTP/1.1 400"),
            "{junk}"
        );
    }

    #[test]
    fn a_render_error_is_a_503() {
        let render: Render =
            Arc::new(|| Box::pin(async { Err("COPS's loop does not answer".into()) }));
        let addr = spawn("127.0.0.1:0", "metrics-test", render).unwrap();
        let r = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("COPS's loop does not answer"), "{r}");
    }

    #[test]
    fn a_bad_address_fails_at_once() {
        let render: Render = Arc::new(|| Box::pin(async { Ok(Registry::default()) }));
        assert!(spawn("not an address", "t", render.clone()).is_err());
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        assert!(spawn(&addr, "t", render).is_err());
    }
}
