//! The one HTTP server every role runs (api, coordinator, origin, worker
//! metrics): HTTP/1.1 keep-alive and h2c on a Tokio listener, with the
//! limits that keep slow or idle clients from holding the process's file
//! descriptors.
//!
//! - A connection must deliver a request's complete headers within
//!   `--http-header-timeout` of opening, or of its first byte after the
//!   previous response; otherwise it is closed (slowloris: half-sent
//!   headers, or a connection that never sends anything).
//! - A keep-alive connection with no request for `--http-idle-timeout` is
//!   closed.
//! - At most `--http-max-connections` connections are served at once;
//!   the next ones get a 503 and are closed at once.
//! - Each request carries its peer address (`ConnectInfo<SocketAddr>`)
//!   and the time its JSON body may take ([`BodyTimeout`],
//!   `--http-body-timeout`: a body that trickles in gets 408).
//! - Stop: no new connections; open ones finish their requests (HTTP/1
//!   closes after the response, HTTP/2 sends GOAWAY), then the server
//!   returns (after `drain_timeout`, when set, the rest are cut).
//!
//! One watchdog per connection enforces both timeouts. hyper's own
//! header timeout is not used: it also runs while a keep-alive connection
//! waits for its next request (so it would cap idle time at the header
//! time), and it does not cover HTTP/2 or the version detection before
//! it. A request counts as in flight from its headers until its response
//! body is finished or dropped; no timeout applies while one is (long
//! polls and uploads have their own).

use crate::config::parse_duration;
use axum::extract::ConnectInfo;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connection limits every role's server takes (flattened into each
/// role's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// A connection must send a request's complete headers within this
    /// long of opening (or of its first byte after a response); slower
    /// ones are closed.
    #[arg(long, env = "VODFARM_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[arg(long, env = "VODFARM_HTTP_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,
    /// Most connections served at once; more are answered 503 and closed.
    /// Keep it under the process's open-file limit (`ulimit -n`).
    #[arg(long, env = "VODFARM_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,
    /// A JSON request body must arrive whole within this long (408
    /// otherwise). Upload bodies have their own idle timeout.
    #[arg(long, env = "VODFARM_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_body_timeout: Duration,
}

impl ServerArgs {
    /// The limits these flags give (no drain deadline).
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            header_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
            max_connections: self.http_max_connections.max(1),
            body_timeout: self.http_body_timeout,
            drain_timeout: None,
        }
    }
}

/// What a server tolerates from its clients.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Longest wait for a request's complete headers.
    pub header_timeout: Duration,
    /// Longest a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Most connections at once.
    pub max_connections: usize,
    /// Longest wait for a whole JSON body ([`BodyTimeout`]).
    pub body_timeout: Duration,
    /// On stop, how long open connections may take to finish (`None`:
    /// as long as they need).
    pub drain_timeout: Option<Duration>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
            body_timeout: Duration::from_secs(30),
            drain_timeout: None,
        }
    }
}

/// The longest wait for a whole JSON body, in every request's extensions
/// (`core::http::ApiJson` reads it).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// The server's connection metrics, in the role's registry.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    open: IntGauge,
    accepted: IntCounter,
    refused: IntCounter,
    closed: IntCounterVec,
}

impl ConnectionMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = ConnectionMetrics {
            open: IntGauge::new("vodfarm_http_connections_open", "HTTP connections open now")?,
            accepted: IntCounter::new(
                "vodfarm_http_connections_accepted_total",
                "HTTP connections accepted (refused ones included)",
            )?,
            refused: IntCounter::new(
                "vodfarm_http_connections_refused_total",
                "HTTP connections refused with 503 because --http-max-connections were open",
            )?,
            closed: IntCounterVec::new(
                Opts::new(
                    "vodfarm_http_connections_timed_out_total",
                    "HTTP connections closed by the server: reason=header (request headers \
                     too slow) or idle (keep-alive idle too long)",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.open.clone()))?;
        registry.register(Box::new(m.accepted.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.closed.clone()))?;
        for reason in [Expiry::Header, Expiry::Idle] {
            m.closed.with_label_values(&[reason.as_str()]);
        }
        Ok(m)
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets open
/// connections finish (see the module's rules).
pub async fn serve_router(
    listener: TcpListener,
    app: axum::Router,
    limits: ServerLimits,
    metrics: ConnectionMetrics,
    stop: CancellationToken,
) {
    serve(
        listener,
        hyper_util::service::TowerToHyperService::new(app),
        limits,
        metrics,
        stop,
    )
    .await;
}

/// Serves `service` on `listener` until `stop` is cancelled, then lets
/// open connections finish (see the module's rules).
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ServerLimits,
    metrics: ConnectionMetrics,
    stop: CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    warn_if_few_descriptors(limits.max_connections);
    let builder = auto::Builder::new(TokioExecutor::new());
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                metrics.accepted.inc();
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    metrics.refused.inc();
                    tracing::warn!(%peer, max = limits.max_connections, "too many connections: refused");
                    // Answering costs a task per refusal; past a few at
                    // once the connection is just closed.
                    if let Ok(slot) = refusals.clone().try_acquire_owned() {
                        tokio::spawn(refuse(tcp, slot));
                    }
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                metrics.open.inc();
                conns.spawn(connection(
                    builder.clone(),
                    tcp,
                    peer,
                    service.clone(),
                    limits,
                    metrics.clone(),
                    stop.clone(),
                    permit,
                ));
            }
        }
    }
    drop(listener);
    let drained = async { while conns.join_next().await.is_some() {} };
    match limits.drain_timeout {
        None => drained.await,
        Some(t) => {
            if tokio::time::timeout(t, drained).await.is_err() {
                tracing::warn!(
                    after = ?t,
                    open = conns.len(),
                    "connections still open; closing them"
                );
                conns.shutdown().await;
            }
        }
    }
}

/// Refusals answered at once; more are closed without an answer.
const REFUSALS_AT_ONCE: usize = 64;

/// The answer past the connection cap.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 84\r\n\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"too many connections open, retry shortly\"}}";

async fn refuse(mut tcp: TcpStream, _slot: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(OVERLOADED).await?;
        tcp.shutdown().await
    })
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn connection<S, B>(
    builder: auto::Builder<TokioExecutor>,
    tcp: TcpStream,
    peer: SocketAddr,
    service: S,
    limits: ServerLimits,
    metrics: ConnectionMetrics,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched {
        io: tcp,
        state: state.clone(),
    });
    let svc = Tracked {
        inner: service,
        state: state.clone(),
        peer,
        body_timeout: BodyTimeout(limits.body_timeout),
    };
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            why = state.expired(&limits) => {
                metrics.closed.with_label_values(&[why.as_str()]).inc();
                tracing::debug!(%peer, reason = why.as_str(), "closing a slow or idle connection");
                break;
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    metrics.open.dec();
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// A request's headers did not arrive in time.
    Header,
    /// No request on a keep-alive connection for too long.
    Idle,
}

impl Expiry {
    fn as_str(self) -> &'static str {
        match self {
            Expiry::Header => "header",
            Expiry::Idle => "idle",
        }
    }
}

/// What the watchdog knows of one connection.
#[derive(Debug)]
struct ConnState {
    /// No request in flight and no byte since the last one: the next
    /// read records when the next request began to arrive.
    awaiting_byte: AtomicBool,
    phase: Mutex<Phase>,
    changed: Notify,
}

#[derive(Debug)]
struct Phase {
    in_flight: usize,
    /// When the connection opened or its last response ended.
    idle_since: Instant,
    /// The first byte after `idle_since`, if any arrived.
    first_byte: Option<Instant>,
    /// Whether a response was ever finished (a fresh connection gets the
    /// header timeout, a kept-alive one the idle timeout).
    served: bool,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            awaiting_byte: AtomicBool::new(true),
            phase: Mutex::new(Phase {
                in_flight: 0,
                idle_since: Instant::now(),
                first_byte: None,
                served: false,
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bytes_arrived(&self) {
        if self.awaiting_byte.swap(false, Ordering::AcqRel) {
            let mut p = self.phase();
            if p.in_flight == 0 && p.first_byte.is_none() {
                p.first_byte = Some(Instant::now());
            }
            drop(p);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut p = self.phase();
        p.in_flight += 1;
        p.first_byte = None;
        self.awaiting_byte.store(false, Ordering::Release);
        drop(p);
        self.changed.notify_one();
    }

    fn request_ended(&self) {
        let mut p = self.phase();
        p.in_flight = p.in_flight.saturating_sub(1);
        if p.in_flight == 0 {
            p.idle_since = Instant::now();
            p.first_byte = None;
            p.served = true;
            self.awaiting_byte.store(true, Ordering::Release);
        }
        drop(p);
        self.changed.notify_one();
    }

    /// When the connection expires if nothing changes, and why.
    fn deadline(&self, limits: &ServerLimits) -> Option<(Instant, Expiry)> {
        let p = self.phase();
        if p.in_flight > 0 {
            return None;
        }
        let waiting = if p.served {
            (p.idle_since + limits.idle_timeout, Expiry::Idle)
        } else {
            (p.idle_since + limits.header_timeout, Expiry::Header)
        };
        Some(match p.first_byte {
            Some(t) if t + limits.header_timeout < waiting.0 => {
                (t + limits.header_timeout, Expiry::Header)
            }
            _ => waiting,
        })
    }

    /// Completes when the connection has expired.
    async fn expired(&self, limits: &ServerLimits) -> Expiry {
        loop {
            // Created before the state is read: a change in between leaves
            // a permit, so it is not missed.
            let changed = self.changed.notified();
            match self.deadline(limits) {
                None => changed.await,
                Some((at, _)) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(at) => {
                            if let Some((at, why)) = self.deadline(limits) {
                                if at <= Instant::now() {
                                    return why;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The socket, telling the watchdog when a request begins to arrive.
#[derive(Debug)]
struct Watched {
    io: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before && self.state.awaiting_byte.load(Ordering::Acquire) {
            self.state.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A request in flight: started when its headers arrived, ended when its
/// response body is finished or dropped.
#[derive(Debug)]
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: Arc<ConnState>) -> Self {
        state.request_started();
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The role's service, counting requests in flight and adding the peer
/// address to each request.
#[derive(Debug, Clone)]
struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
    peer: SocketAddr,
    body_timeout: BodyTimeout,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = Response<Guarded<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut().insert(self.body_timeout);
        let guard = InFlight::start(self.state.clone());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|body| Guarded {
                body: Box::pin(body),
                _in_flight: guard,
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is done.
struct Guarded<B> {
    body: Pin<Box<B>>,
    _in_flight: InFlight,
}

impl<B> std::fmt::Debug for Guarded<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").finish_non_exhaustive()
    }
}

impl<B: Body> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Warns when the open-file limit is below what the connection cap
/// needs (each connection is a file descriptor; the database pool, the
/// store's connections and files need some too).
fn warn_if_few_descriptors(max_connections: usize) {
    let Some(soft) = open_file_limit() else {
        return;
    };
    let wanted = max_connections as u64 + 128;
    if soft < wanted {
        tracing::warn!(
            open_file_limit = soft,
            max_connections,
            "the open-file limit is below --http-max-connections + 128: raise it \
             (ulimit -n) or lower --http-max-connections"
        );
    }
}

/// The soft `RLIMIT_NOFILE`, from `/proc/self/limits` (Linux).
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerLimits {
        ServerLimits {
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        }
    }

    fn kind(s: &ConnState, l: &ServerLimits) -> Option<Expiry> {
        s.deadline(l).map(|(_, why)| why)
    }

    #[test]
    fn deadlines_follow_the_connection() {
        let l = limits();
        let before = Instant::now();
        let s = ConnState::new();
        // Fresh: the header timeout from the opening, bytes or not.
        let (at, why) = s.deadline(&l).unwrap_or((before, Expiry::Idle));
        assert_eq!(why, Expiry::Header);
        assert!(at >= before + l.header_timeout);
        s.bytes_arrived();
        assert_eq!(s.deadline(&l).map(|d| d.0), Some(at));
        // In flight: none.
        s.request_started();
        assert_eq!(kind(&s, &l), None);
        s.request_ended();
        // Kept alive: the idle timeout…
        assert_eq!(kind(&s, &l), Some(Expiry::Idle));
        // …until the next request begins: then its headers' timeout.
        let first = Instant::now();
        s.bytes_arrived();
        let (at, why) = s.deadline(&l).unwrap_or((first, Expiry::Idle));
        assert_eq!(why, Expiry::Header);
        assert!(at >= first + l.header_timeout && at < first + l.idle_timeout);
    }

    #[tokio::test]
    async fn the_watchdog_fires_only_when_nothing_is_in_flight() {
        let s = Arc::new(ConnState::new());
        let l = limits();
        s.request_started();
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.expired(&l).await }
        });
        tokio::time::sleep(l.idle_timeout * 3).await;
        assert!(!waiting.is_finished(), "expired with a request in flight");
        let ended = Instant::now();
        s.request_ended();
        let why = tokio::time::timeout(Duration::from_secs(30), waiting).await;
        assert_eq!(why.ok().and_then(Result::ok), Some(Expiry::Idle));
        assert!(ended.elapsed() >= l.idle_timeout);
    }

    #[test]
    fn the_overloaded_answer_is_well_formed() {
        let text = std::str::from_utf8(OVERLOADED).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
