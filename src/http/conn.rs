//! One connection: hyper serving it, and what the drain does to it.

use std::future::Future;
use std::io::IoSlice;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::{BoxError, DrainSignal, PeerAddr};

/// What every connection of one [`serve`](super::serve) shares.
#[derive(Debug)]
pub(super) struct Settings {
    close_idle_after: Option<Duration>,
}

/// At most this long before the drain deadline, idle connections are
/// closed (so that they end cleanly rather than be cut by the exit)...
const MAX_IDLE_MARGIN: Duration = Duration::from_secs(1);
/// ...and at most this part of the time left.
const IDLE_MARGIN_DIVISOR: u32 = 10;

impl Settings {
    pub(super) fn new(close_idle_after: Option<Duration>) -> Self {
        Settings { close_idle_after }
    }

    /// When the connections still idle are closed, for a drain that began
    /// at `began` and ends at `deadline` (if known).
    fn idle_close_at(&self, began: Instant, deadline: Option<Instant>) -> Option<Instant> {
        let by_deadline = deadline.map(|deadline| {
            let left = deadline.saturating_duration_since(began);
            let margin = (left / IDLE_MARGIN_DIVISOR).min(MAX_IDLE_MARGIN);
            deadline.checked_sub(margin).unwrap_or(deadline)
        });
        let by_option = self
            .close_idle_after
            .and_then(|after| began.checked_add(after));
        match (by_deadline, by_option) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The connection's stream, holding the drain open (and the `serve` call)
/// for as long as it lives — upgraded or not: after an upgrade, hyper hands
/// it to the request handler, and the drain waits until the handler drops
/// it.
pub(super) struct TrackedIo<I> {
    io: I,
    _tokens: [TaskTrackerToken; 2],
}

impl<I> TrackedIo<I> {
    pub(super) fn new(io: I, tokens: [TaskTrackerToken; 2]) -> Self {
        TrackedIo {
            io,
            _tokens: tokens,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The user's service as hyper calls it for one connection: adds the
/// request extensions, notes the protocol, and marks responses sent during
/// the drain `Connection: close`.
struct ConnService<S, A> {
    inner: S,
    peer: A,
    drain: DrainSignal,
    /// Cancelled at the first HTTP/2 request: the handshake is over, a
    /// GOAWAY can be sent.
    h2_seen: CancellationToken,
}

impl<S, A, B> hyper::service::Service<Request<Incoming>> for ConnService<S, A>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    A: Clone + Send + Sync + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let version = request.version();
        if version == Version::HTTP_2 {
            self.h2_seen.cancel();
        }
        let extensions = request.extensions_mut();
        extensions.insert(self.drain.clone());
        extensions.insert(PeerAddr(self.peer.clone()));
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.peer.clone()));
        let mut service = self.inner.clone();
        let drain = self.drain.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            let mut response = service.call(request).await?;
            if drain.is_draining()
                && version < Version::HTTP_2
                && response.status() != StatusCode::SWITCHING_PROTOCOLS
            {
                // hyper closes the connection once this response is sent;
                // the client's next request goes to a new connection.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        })
    }
}

/// Serves one accepted connection (HTTP/1.1 or HTTP/2, upgrades allowed)
/// until it closes; see the module docs of `http` for the drain.
pub(super) async fn serve_connection<I, A, S, B>(
    io: TrackedIo<I>,
    peer: A,
    service: S,
    drain: DrainSignal,
    settings: Arc<Settings>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Clone + Send + Sync + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let h2_seen = CancellationToken::new();
    let service = ConnService {
        inner: service,
        peer,
        drain: drain.clone(),
        h2_seen: h2_seen.clone(),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // WebSockets over HTTP/2 (RFC 8441), as axum::serve allows them.
    builder.http2().enable_connect_protocol();
    let mut connection = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));

    // Serving: until the connection closes or the drain begins.
    tokio::select! {
        result = connection.as_mut() => return log_end(result),
        () = drain.draining() => {}
    }

    // Draining. HTTP/1: responses carry `Connection: close` (ConnService)
    // and hyper closes the connection after each; an idle connection is
    // left alone, since closing it would race the client's next request
    // (hyper's graceful shutdown would close it at once, even before its
    // first request is read). HTTP/2: a GOAWAY, once the handshake is over
    // (before, hyper's graceful shutdown closes the connection unread).
    // Whatever is still open at `idle_close_at` gets hyper's graceful
    // shutdown: idle connections close, busy ones after their request.
    let idle_close_at = settings.idle_close_at(Instant::now(), drain.deadline());
    let idle_close = async {
        match idle_close_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let mut idle_close = pin!(idle_close);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => return log_end(result),
            () = h2_seen.cancelled(), if !shutting_down => {
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            () = &mut idle_close, if !shutting_down => {
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
    }
}

fn log_end(result: Result<(), BoxError>) {
    if let Err(error) = result {
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_close_just_before_the_deadline_or_earlier_if_asked() {
        let began = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let default = Settings::new(None);
        assert_eq!(
            default.idle_close_at(began, Some(began + s(70))),
            Some(began + s(69))
        );
        assert_eq!(
            default.idle_close_at(began, Some(began + s(2))),
            Some(began + ms(1800))
        );
        assert_eq!(default.idle_close_at(began, None), None);
        let early = Settings::new(Some(s(5)));
        assert_eq!(
            early.idle_close_at(began, Some(began + s(70))),
            Some(began + s(5))
        );
        assert_eq!(
            early.idle_close_at(began, Some(began + s(2))),
            Some(began + ms(1800))
        );
        assert_eq!(early.idle_close_at(began, None), Some(began + s(5)));
    }
}
