//! What a request handler gets: [`DrainSignal`] and [`PeerAddr`].

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Context, HandoverState};

/// Tells a request handler when this generation's drain begins, and when
/// it must end: for work that outlives a response — a WebSocket, a
/// server-sent event stream, a long poll — to say goodbye (a close frame,
/// a last event) and finish.
///
/// Every request served by [`serve`](super::serve) carries one in its
/// extensions; with the `axum` feature it is also an extractor. A service
/// served otherwise can build one from its [`Context`] (`DrainSignal::from(&ctx)`)
/// and put it in its state.
///
/// The drain begins when this generation stops accepting for good (its
/// successor took over, or a stop was requested), not while a successor is
/// merely on probation.
///
/// ```no_run
/// use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
/// use axum::response::Response;
/// use shellflip::http::DrainSignal;
///
/// async fn ws(upgrade: WebSocketUpgrade, drain: DrainSignal) -> Response {
///     upgrade.on_upgrade(move |mut socket: WebSocket| async move {
///         loop {
///             tokio::select! {
///                 message = socket.recv() => match message {
///                     Some(Ok(Message::Text(text))) => {
///                         if socket.send(Message::Text(text)).await.is_err() {
///                             return;
///                         }
///                     }
///                     Some(Ok(_)) => {}
///                     _ => return,
///                 },
///                 () = drain.draining() => {
///                     let close = CloseFrame { code: 1001, reason: "restarting".into() };
///                     let _ = socket.send(Message::Close(Some(close))).await;
///                     // Wait (bounded by the drain) for the client's close.
///                     while let Some(Ok(message)) = socket.recv().await {
///                         if let Message::Close(_) = message {
///                             break;
///                         }
///                     }
///                     return;
///                 }
///             }
///         }
///     })
/// }
/// ```
#[derive(Clone)]
pub struct DrainSignal {
    token: CancellationToken,
    deadline: Arc<dyn Fn() -> Option<Instant> + Send + Sync>,
}

impl std::fmt::Debug for DrainSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainSignal")
            .field("draining", &self.is_draining())
            .field("deadline", &self.deadline())
            .finish()
    }
}

impl<S: HandoverState> From<&Context<S>> for DrainSignal {
    fn from(ctx: &Context<S>) -> Self {
        let for_deadline = ctx.clone();
        DrainSignal {
            token: ctx.shutdown_token(),
            deadline: Arc::new(move || for_deadline.drain_deadline()),
        }
    }
}

impl DrainSignal {
    /// True once the drain has begun.
    ///
    /// ```
    /// # fn f(drain: shellflip::http::DrainSignal) -> Vec<u8> {
    /// // A long response stops adding chunks once the drain began.
    /// let mut body = Vec::new();
    /// while body.len() < 1 << 20 && !drain.is_draining() {
    ///     body.extend_from_slice(b"data\n");
    /// }
    /// body
    /// # }
    /// ```
    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the drain has begun (at once if it has).
    ///
    /// ```no_run
    /// # async fn f(drain: shellflip::http::DrainSignal) {
    /// drain.draining().await;
    /// // say goodbye to the client, then return
    /// # }
    /// ```
    pub async fn draining(&self) {
        self.token.cancelled().await
    }

    /// When the drain ends, once it has begun (`None` before): work still
    /// running then is cut by the process's exit.
    ///
    /// ```no_run
    /// # async fn f(drain: shellflip::http::DrainSignal) {
    /// drain.draining().await;
    /// if let Some(deadline) = drain.deadline() {
    ///     // Finish the stream a little before the exit cuts it.
    ///     tokio::time::sleep_until(deadline - std::time::Duration::from_millis(100)).await;
    /// }
    /// # }
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        (self.deadline)()
    }
}

/// The address of the peer that sent a request: in the extensions of every
/// request served by [`serve`](super::serve) (`SocketAddr` for a TCP
/// listener, `tokio::net::unix::SocketAddr` for a Unix one).
///
/// ```
/// # fn handler(request: http::Request<()>) {
/// use shellflip::http::PeerAddr;
/// if let Some(PeerAddr(peer)) = request.extensions().get::<PeerAddr<std::net::SocketAddr>>() {
///     println!("request from {peer}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr<A>(pub A);

/// The rejection of the [`DrainSignal`] extractor: the request was not
/// served by [`serve`](super::serve), and no `DrainSignal` was added to it.
/// Answers 500 Internal Server Error. A router served otherwise can add
/// one:
///
/// ```no_run
/// # fn f(ctx: &shellflip::Context, router: axum::Router) -> axum::Router {
/// use shellflip::http::DrainSignal;
/// router.layer(axum::Extension(DrainSignal::from(ctx)))
/// # }
/// ```
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the request has no DrainSignal: it was not served by shellflip::http::serve; \
     serve the router with it, or add one with `.layer(Extension(DrainSignal::from(&ctx)))`"
)]
pub struct MissingDrainSignal;

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for MissingDrainSignal {
    fn into_response(self) -> axum::response::Response {
        (http::StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for DrainSignal {
    type Rejection = MissingDrainSignal;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<DrainSignal>()
            .cloned()
            .ok_or(MissingDrainSignal)
    }
}
