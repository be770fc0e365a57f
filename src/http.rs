//! HTTP services that lose nothing across a restart: [`serve`] runs any
//! hyper or tower service — an [`axum::Router`](https://docs.rs/axum) for
//! one — on a restartable listener (features `hyper`, or `axum` which
//! implies it; both off by default).
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use shellflip::{restartable, Context};
//!
//! #[restartable(control = "/tmp/web.sock", drain_timeout = "30s")]
//! async fn main(ctx: Context) -> Result<(), shellflip::Error> {
//!     let listener = ctx.tcp_listener("http", "127.0.0.1:8080")?;
//!     let router = Router::new().route("/", get(|| async { "hello\n" }));
//!     ctx.ready()?;
//!     shellflip::http::serve(&ctx, listener, router).await;
//!     Ok(())
//! }
//! ```
//!
//! It is `axum::serve(listener, router)` (HTTP/1.1 and HTTP/2 on the same
//! port, upgrades such as WebSockets) with a drain that keeps the promise
//! "no cut request", which `axum::serve(..).with_graceful_shutdown(..)`
//! cannot keep across a restart:
//!
//! - **New connections.** It accepts through
//!   [`Context::accept`](crate::Context::accept): while a successor is on
//!   probation it takes nothing, and once this generation stops accepting
//!   for good it accepts nothing more at once; every later connection
//!   goes to the successor, which listens on the same socket.
//! - **Connections already accepted are served**, even when their first
//!   request had not been read yet when the drain began (hyper's graceful
//!   shutdown closes such a connection unread: hyper issue #2730).
//! - **HTTP/1.1 keep-alive.** Every response sent during the drain carries
//!   `Connection: close`, so the client opens its next connection to the
//!   successor. A connection that is idle when the drain begins is *not*
//!   closed then (the client may be sending its next request at that very
//!   moment, and would see it fail): it stays open until its next request,
//!   which is answered with `Connection: close`, or until the client
//!   closes it. Those still idle just before the drain deadline (a tenth
//!   of the drain timeout before it, at most 1 s before) are closed then;
//!   a request a client sends in that instant fails, the only residue.
//!   [`Serve::close_idle_after`] closes them earlier, at the price of that
//!   residue sooner.
//! - **HTTP/2.** A connection gets a GOAWAY once the drain has begun (once
//!   its handshake is over): its streams in flight complete, and the
//!   client opens new ones on a new connection, to the successor.
//! - **Requests in flight** complete within the drain timeout: each
//!   connection is a task the drain waits for.
//! - **Upgraded connections** (WebSockets) are part of the drain too: the
//!   drain waits until the upgraded stream is dropped. Their handlers learn
//!   that the drain began from the [`DrainSignal`] every request carries in
//!   its extensions (an extractor with the `axum` feature), to send a close
//!   frame and finish.
//!
//! HTTP/1.1 pipelining: requests a client pipelined behind one answered
//! with `Connection: close` are not answered (RFC 9112 §9.3.2: the client
//! retries them on a new connection).
//!
//! Every request also carries the peer's address: [`PeerAddr`] in its
//! extensions, and with the `axum` feature `axum::extract::ConnectInfo`
//! as well (no `into_make_service_with_connect_info` needed).

mod conn;
mod drain;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;

use crate::{Accept, Context, HandoverState};

#[cfg(feature = "axum")]
pub use drain::MissingDrainSignal;
pub use drain::{DrainSignal, PeerAddr};

/// The error a served service or its response body may fail with: any
/// error that converts into it (`std::convert::Infallible` for an
/// `axum::Router`). A service error makes hyper close the connection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `service` on `listener` until this generation stops accepting
/// for good, then drains: see the [module docs](self) for what happens to
/// each kind of connection.
///
/// `listener` is usually one from
/// [`Context::tcp_listener`](crate::Context::tcp_listener) or
/// [`Context::unix_listener`](crate::Context::unix_listener); `service` is
/// any tower service of `Request<hyper::body::Incoming>` that can be cloned
/// (each request is served by a clone), an `axum::Router` for one.
///
/// The returned [`Serve`] does nothing until awaited; it resolves once
/// this generation stopped accepting and every connection it accepted is
/// closed (upgraded ones included), which the drain bounds. The
/// connections are tasks of the drain
/// ([`Context::spawn`](crate::Context::spawn)): if the `Serve` future is
/// dropped, the connections it accepted are still served.
///
/// ```no_run
/// # async fn service(ctx: shellflip::Context) -> Result<(), shellflip::Error> {
/// use std::time::Duration;
/// use axum::{routing::get, Router};
///
/// let listener = ctx.tcp_listener("http", "127.0.0.1:8080")?;
/// let router = Router::new().route("/", get(|| async { "hello\n" }));
/// ctx.ready()?;
/// shellflip::http::serve(&ctx, listener, router)
///     .close_idle_after(Duration::from_secs(5))
///     .await;
/// # Ok(())
/// # }
/// ```
pub fn serve<St, L, S>(ctx: &Context<St>, listener: L, service: S) -> Serve<St, L, S>
where
    St: HandoverState,
{
    Serve {
        ctx: ctx.clone(),
        listener,
        service,
        close_idle_after: None,
    }
}

/// A server being set up by [`serve`]; await it to run it (it implements
/// [`IntoFuture`]), after options such as
/// [`close_idle_after`](Self::close_idle_after).
///
/// ```no_run
/// # async fn f(ctx: shellflip::Context, listener: tokio::net::TcpListener, router: axum::Router) {
/// let server = shellflip::http::serve(&ctx, listener, router);
/// server.await; // returns once this generation is drained
/// # }
/// ```
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<St: HandoverState, L, S> {
    ctx: Context<St>,
    listener: L,
    service: S,
    close_idle_after: Option<Duration>,
}

impl<St: HandoverState, L, S> std::fmt::Debug for Serve<St, L, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("generation", &self.ctx.generation())
            .field("close_idle_after", &self.close_idle_after)
            .finish_non_exhaustive()
    }
}

impl<St: HandoverState, L, S> Serve<St, L, S> {
    /// Closes the connections still idle `after` the drain began, instead
    /// of just before the drain deadline: the old generation exits sooner
    /// when clients keep idle keep-alive connections (browsers, connection
    /// pools), and a client that sends a request on such a connection at
    /// the moment it is closed sees that request fail (most retry an
    /// idempotent request on a new connection). Connections busy then
    /// finish their request first. Never later than the default.
    ///
    /// ```no_run
    /// # async fn service(ctx: shellflip::Context, listener: tokio::net::TcpListener) {
    /// # let router = axum::Router::new();
    /// use std::time::Duration;
    /// shellflip::http::serve(&ctx, listener, router)
    ///     .close_idle_after(Duration::from_secs(2))
    ///     .await;
    /// # }
    /// ```
    pub fn close_idle_after(mut self, after: Duration) -> Self {
        self.close_idle_after = Some(after);
        self
    }
}

impl<St, L, I, A, S, B> IntoFuture for Serve<St, L, S>
where
    St: HandoverState,
    L: Accept<Connection = (I, A)> + Send + Sync + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Clone + Send + Sync + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl<St: HandoverState, L, S> Serve<St, L, S> {
    async fn run<I, A, B>(self)
    where
        L: Accept<Connection = (I, A)> + Send + Sync + 'static,
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        A: Clone + Send + Sync + 'static,
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let Serve {
            ctx,
            listener,
            service,
            close_idle_after,
        } = self;
        let drain = DrainSignal::from(&ctx);
        let settings = Arc::new(conn::Settings::new(close_idle_after));
        // This call's connections, to return once they are closed.
        let ours = TaskTracker::new();
        while let Some((io, peer)) = ctx.accept(&listener).await {
            let io = conn::TrackedIo::new(io, [ctx.task_tracker().token(), ours.token()]);
            let connection = conn::serve_connection(
                io,
                peer,
                service.clone(),
                drain.clone(),
                Arc::clone(&settings),
            );
            ctx.spawn(ours.track_future(connection));
        }
        // Accepting is over for good: the successor has the socket.
        drop(listener);
        ours.close();
        ours.wait().await;
    }
}
