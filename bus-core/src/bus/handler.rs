//! Handlers: the code a subscription runs for each message.
//!
//! Async handlers run on the subscription's own Tokio task. Blocking
//! handlers run on the subscription's own OS thread, so a handler that does
//! file I/O or heavy computation never occupies a runtime worker. Either kind
//! may fail or panic; [`CatchUnwind`] turns a panic into an error the bus
//! counts, so the subscription, the bus and other handlers carry on.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use crate::bus::Acknowledgement;

use crate::bus::error::{HandlerError, HandlerResult};
use crate::model::Envelope;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An asynchronous message handler.
pub trait AsyncHandler: Send + Sync + 'static {
    /// Handles one message.
    fn call(&self, envelope: Arc<Envelope>) -> BoxFuture<HandlerResult>;
}

impl<F, Fut> AsyncHandler for F
where
    F: Fn(Arc<Envelope>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, envelope: Arc<Envelope>) -> BoxFuture<HandlerResult> {
        Box::pin(self(envelope))
    }
}

/// An asynchronous handler that settles each message itself through the
/// [`Acknowledgement`] it is given, possibly after it returns (see
/// [`Handler::manual_ack`]).
pub trait ManualAckHandler: Send + Sync + 'static {
    /// Starts handling one message.
    fn call(&self, envelope: Arc<Envelope>, ack: Acknowledgement) -> BoxFuture<HandlerResult>;
}

impl<F, Fut> ManualAckHandler for F
where
    F: Fn(Arc<Envelope>, Acknowledgement) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, envelope: Arc<Envelope>, ack: Acknowledgement) -> BoxFuture<HandlerResult> {
        Box::pin(self(envelope, ack))
    }
}

/// A blocking handler, run on its subscription's own thread.
pub type BlockingHandler = Box<dyn FnMut(&Envelope) -> HandlerResult + Send + 'static>;

/// Either kind of handler.
pub enum Handler {
    /// Runs on a Tokio task.
    Async(Arc<dyn AsyncHandler>),
    /// Runs on a dedicated thread.
    Blocking(BlockingHandler),
    /// Runs on a Tokio task and acknowledges explicitly.
    ManualAck {
        /// The handler.
        handler: Arc<dyn ManualAckHandler>,
        /// How long a delivery may stay unsettled before it counts as failed.
        ack_wait: Duration,
    },
}

impl Handler {
    /// Wraps an async closure `|envelope| async move { ... }`.
    pub fn from_async<F, Fut>(f: F) -> Self
    where
        F: Fn(Arc<Envelope>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        Handler::Async(Arc::new(f))
    }

    /// Wraps an async closure `|envelope, ack| async move { ... }` that
    /// settles each message with `ack.ack()` or `ack.nack(reason)`, possibly
    /// later (from another task, after a batch is flushed...). Until then the
    /// message stays pending; for at-least-once and exactly-once messages a
    /// nack, a dropped acknowledgement or `ack_wait` passing without either
    /// schedules a redelivery (with the subscription's backoff) or, after the
    /// last attempt, a dead letter. Returning an error nacks at once unless
    /// the message was already acked. The consumer does not wait for the
    /// settlement before taking the next message.
    pub fn manual_ack<F, Fut>(ack_wait: Duration, f: F) -> Self
    where
        F: Fn(Arc<Envelope>, Acknowledgement) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        Handler::ManualAck {
            handler: Arc::new(f),
            ack_wait,
        }
    }

    /// Wraps a blocking closure `|envelope| { ... }`.
    pub fn blocking<F>(f: F) -> Self
    where
        F: FnMut(&Envelope) -> HandlerResult + Send + 'static,
    {
        Handler::Blocking(Box::new(f))
    }
}

/// Text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// How one handler call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Returned Ok.
    Ok,
    /// Returned an error.
    Failed(HandlerError),
    /// Panicked; the text of the panic.
    Panicked(String),
}

impl Outcome {
    /// Turns a handler result or a caught panic into an outcome.
    pub fn from_call(result: Result<HandlerResult, Box<dyn Any + Send>>) -> Self {
        match result {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(error)) => Outcome::Failed(error),
            Err(panic) => Outcome::Panicked(panic_message(&*panic)),
        }
    }
}

/// Runs a blocking handler, catching a panic.
pub fn call_blocking<F>(f: F) -> Outcome
where
    F: FnOnce() -> HandlerResult,
{
    Outcome::from_call(catch_unwind(AssertUnwindSafe(f)))
}

/// A future that turns a panic while polling its inner future into an outcome.
pub struct CatchUnwind {
    inner: BoxFuture<HandlerResult>,
}

impl CatchUnwind {
    /// Wraps a handler's future.
    pub fn new(inner: BoxFuture<HandlerResult>) -> Self {
        Self { inner }
    }
}

impl Future for CatchUnwind {
    type Output = Outcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Outcome::from_call(Ok(result))),
            Err(panic) => Poll::Ready(Outcome::from_call(Err(panic))),
        }
    }
}
