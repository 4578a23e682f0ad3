//! Transports: what carries one agent's messages, and the driver that runs
//! an agent on any of them.
//!
//! A [`Transport`] subscribes an agent to its patterns, hands its
//! deliveries over one at a time, publishes what the agent sends, and
//! settles each delivery once the agent has handled it (and what it sent
//! because of it has been published). Two implement it:
//!
//! * [`InProcess`]: the [`MessageBus`] of this process. The agent's
//!   subscription is a named (so, on a durable bus, durable) manual-ack
//!   subscription; a delivery is acknowledged after the agent handled it,
//!   and a failure is nacked — redelivered with backoff, then
//!   dead-lettered, per the bus's retry policy.
//! * `nats::NatsTransport` (feature `nats`): core NATS, and JetStream for
//!   the families configured reliable.
//!
//! [`run_agent`] drives any agent on either, unchanged: the agents never
//! see the transport, and which one carries them is configuration.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::supervision::{AgentSpec, Supervised};
use crate::agent::Produce;
use crate::bus::error::HandlerResult;
use crate::bus::generation::Publishers;
use crate::bus::tick_to_order::TickToOrder;
use crate::bus::Outbox;
use crate::bus::{MessageBus, OverflowPolicy, Pull, Pulled, SubscribeOptions, SPINS_BEFORE_SLEEP};
use crate::model::ids::AgentId;
use crate::model::topic::TopicPattern;
use crate::model::{Envelope, Payload};
use crate::runtime::{RunError, StopSignal};

/// The most deliveries an [`Inbox`] hands over at once.
pub const MAX_TAKE: usize = 32;

/// Where an [`Inbox`]'s deliveries come from. The driver takes what is
/// waiting, in batches, on the agent's own task: a busy stream costs no
/// wake-up and no channel operation per message.
pub trait Deliveries<D>: Send {
    /// Moves what is waiting, up to [`MAX_TAKE`], onto the back of `into`
    /// (in arrival order). Pending when nothing is (the task is woken when
    /// something comes); ready with `false` once nothing more will come
    /// (after what it moved, if anything), else `true`.
    fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        into: &mut VecDeque<D>,
    ) -> std::task::Poll<bool>;

    /// Moves what is waiting, up to [`MAX_TAKE`], onto the back of `into`
    /// without waiting; whether it moved anything.
    fn try_take(&mut self, into: &mut VecDeque<D>) -> bool;
}

/// Deliveries sent one by one over a channel.
pub struct Channel<D: 'static> {
    deliveries: flume::Receiver<D>,
    /// The receive in progress, once polled.
    waiting: Option<flume::r#async::RecvFut<'static, D>>,
}

impl<D: 'static> Channel<D> {
    /// Reads `deliveries`.
    pub fn new(deliveries: flume::Receiver<D>) -> Self {
        Self {
            deliveries,
            waiting: None,
        }
    }
}

impl<D: Send + 'static> Deliveries<D> for Channel<D> {
    fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        into: &mut VecDeque<D>,
    ) -> std::task::Poll<bool> {
        use std::task::Poll;
        let receiver = &self.deliveries;
        let waiting = self
            .waiting
            .get_or_insert_with(|| receiver.clone().into_recv_async());
        match std::pin::Pin::new(waiting).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(received) => {
                self.waiting = None;
                let Ok(delivery) = received else {
                    return Poll::Ready(false);
                };
                into.push_back(delivery);
                self.try_take(into);
                Poll::Ready(true)
            }
        }
    }

    fn try_take(&mut self, into: &mut VecDeque<D>) -> bool {
        let before = into.len();
        while into.len() - before < MAX_TAKE {
            match self.deliveries.try_recv() {
                Ok(delivery) => into.push_back(delivery),
                Err(_) => break,
            }
        }
        into.len() > before
    }
}

/// Deliveries for one subscriber, and what keeps them coming (dropping the
/// inbox ends the subscription).
pub struct Inbox<D> {
    deliveries: Box<dyn Deliveries<D>>,
    /// Runs `on_drop` when the inbox goes (unsubscribe, stop readers).
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<D> Inbox<D> {
    /// An inbox reading `deliveries`; `on_drop` runs when it is dropped.
    pub fn new(
        deliveries: impl Deliveries<D> + 'static,
        on_drop: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Self {
            deliveries: Box::new(deliveries),
            on_drop: Some(Box::new(on_drop)),
        }
    }

    /// Waits for deliveries and moves them onto the back of `into`;
    /// `false` once none will come.
    pub async fn take(&mut self, into: &mut VecDeque<D>) -> bool {
        std::future::poll_fn(|cx| self.deliveries.poll_take(cx, into)).await
    }

    /// Moves what is waiting onto the back of `into`; whether there was
    /// anything.
    pub fn try_take(&mut self, into: &mut VecDeque<D>) -> bool {
        self.deliveries.try_take(into)
    }
}

impl<D> Drop for Inbox<D> {
    fn drop(&mut self) {
        if let Some(on_drop) = self.on_drop.take() {
            on_drop();
        }
    }
}

/// What carries one agent's messages.
pub trait Transport: Send + Sync {
    /// A message as it arrived, not yet opened.
    type Delivery: Send + 'static;
    /// What goes wrong.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Publications sent but not yet confirmed stored (JetStream's
    /// acknowledgements still to come).
    type Unconfirmed: Send + 'static;

    /// Subscribes `agent` to `patterns` (plus the health checks every agent
    /// answers). Returns once the subscription is in place, so what is
    /// published afterwards reaches it.
    fn subscribe(
        &self,
        agent: &AgentId,
        patterns: Vec<TopicPattern>,
    ) -> impl Future<Output = Result<Inbox<Self::Delivery>, Self::Error>> + Send;

    /// Sends `envelopes` in order. Returns what is still to be confirmed
    /// before they count as stored (reliable delivery), if anything: see
    /// [`Transport::confirm`].
    fn send(
        &self,
        envelopes: &[Envelope],
    ) -> impl Future<Output = Result<Option<Self::Unconfirmed>, Self::Error>> + Send;

    /// Sends what a source produced (a step of its data), in order. As
    /// [`Transport::send`], unless the transport paces sources: then each
    /// message is worked through before the next (see
    /// [`InProcess::lockstep`]).
    fn send_produced(
        &self,
        envelopes: &[Envelope],
    ) -> impl Future<Output = Result<Option<Self::Unconfirmed>, Self::Error>> + Send {
        self.send(envelopes)
    }

    /// Waits until what [`Transport::send`] left unconfirmed is stored.
    fn confirm(
        &self,
        unconfirmed: Self::Unconfirmed,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The envelope in a delivery, to hand to `agent`; `None` when it is not
    /// the agent's to handle (another instance's share, a duplicate, or
    /// undecodable — dead-lettered), in which case it is settled here.
    /// (The delivery is lent, not moved: moving it in and out of the
    /// futures cost a copy of it each time.)
    fn open(
        &self,
        delivery: &Self::Delivery,
        agent: &AgentId,
    ) -> impl Future<Output = Result<Option<Arc<Envelope>>, Self::Error>> + Send;

    /// Whether a delivery has anything to settle once handled (a core NATS
    /// message that is not a request has not: the driver then skips
    /// [`Transport::settle`]).
    fn settles(&self, _delivery: &Self::Delivery) -> bool {
        true
    }

    /// Settles a delivery, opened as `envelope`, that `agent` handled with
    /// `outcome`, after `answers` (what it published because of it) were
    /// published.
    fn settle(
        &self,
        delivery: Self::Delivery,
        envelope: &Envelope,
        agent: &AgentId,
        outcome: &HandlerResult,
        answers: &[Envelope],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Makes sure what was published has left this process.
    fn flush(&self) -> impl Future<Output = ()> + Send;

    /// Whether a source may produce its next step now; a transport that
    /// paces its sources says no until what the last step caused is
    /// handled (see [`InProcess::lockstep`]).
    fn may_step(&self) -> bool {
        true
    }

    /// Waits a little before a source that may not step looks again
    /// (`looks`: how often it has looked in a row): on a thread of its own,
    /// yielding the CPU, then sleeping briefly.
    fn pause(&self, looks: u32) -> impl Future<Output = ()> + Send {
        pause_on_own_thread(looks);
        std::future::ready(())
    }
}

/// Between a source's looks, on a thread of its own: yields the CPU, then
/// (after 64 looks in a row) sleeps briefly.
fn pause_on_own_thread(looks: u32) {
    if looks < 64 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// What [`run_agent`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentRunStats {
    /// Messages handed to the agent.
    pub received: u64,
    /// Messages the agent published.
    pub published: u64,
}

/// Why [`run_agent`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum AgentRunError<E: std::error::Error + 'static> {
    /// The transport failed.
    #[error(transparent)]
    Transport(E),
    /// The agent could not start, or failed for good.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs one agent on `transport` until it is a finished source, its inbox
/// closes, or `stop` is raised; the agent is supervised as on the other
/// drivers. `ready`, if given, is told once the subscriptions are in place
/// (before the agent starts), so a caller can start what publishes to it.
pub async fn run_agent<T: Transport>(
    spec: AgentSpec,
    transport: &T,
    stop: StopSignal,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(Supervised, AgentRunStats), AgentRunError<T::Error>> {
    let coordination = Coordination {
        subscribed: ready,
        ..Coordination::default()
    };
    run_agent_with(spec, transport, stop, coordination).await
}

/// How one agent's run is coordinated with the other agents of a run.
#[derive(Debug, Default)]
pub struct Coordination {
    /// Told once the agent's subscriptions are in place (before it starts).
    pub subscribed: Option<tokio::sync::oneshot::Sender<()>>,
    /// Waited for before the agent starts: a run subscribes every agent
    /// before any source produces, so nothing published is missed.
    pub start: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Told once the agent will produce nothing more: when a source is
    /// done, at once for an agent that is not a source.
    pub produced_all: Option<tokio::sync::oneshot::Sender<()>>,
    /// A source that is done keeps handling messages (health checks,
    /// commands) until `stop`, instead of ending: the other agents of its
    /// run still work through what it produced.
    pub stay_after_producing: bool,
    /// Raised to end a run early and gracefully: a source produces nothing
    /// more (as if its data had ended) while every agent goes on handling
    /// what is under way, until its own `stop`.
    pub stop_producing: Option<StopSignal>,
}

/// [`run_agent`], coordinated with the agents around it.
pub async fn run_agent_with<T: Transport>(
    spec: AgentSpec,
    transport: &T,
    stop: StopSignal,
    mut coordination: Coordination,
) -> Result<(Supervised, AgentRunStats), AgentRunError<T::Error>> {
    let mut agent = Supervised::new(spec, false);
    let id = agent.id().clone();
    let mut inbox = transport
        .subscribe(&id, agent.agent().subscriptions())
        .await
        .map_err(AgentRunError::Transport)?;
    if let Some(subscribed) = coordination.subscribed.take() {
        let _ = subscribed.send(());
    }
    if let Some(start) = coordination.start.take() {
        // A dropped sender means the run is going away: start anyway and
        // let `stop` end it.
        let _ = start.await;
    }
    let mut driver = Driver {
        agent_id: id.clone(),
        transport,
        stats: AgentRunStats::default(),
        out: Outbox::new(),
        pending: VecDeque::new(),
    };
    driver
        .drive(&mut agent, &mut inbox, &stop, coordination)
        .await?;
    drop(inbox);
    if let Some(failure) = agent.failure() {
        return Err(RunError::AgentFailed(failure.to_string()).into());
    }
    Ok((agent, driver.stats))
}

/// Waits out the backoff of an agent that its policy just restarted (only
/// this agent waits; the others carry on).
async fn backoff(agent: &mut Supervised) {
    if let Some(wait) = agent.pending_backoff.take() {
        tokio::time::sleep(wait).await;
    }
}

/// Publications waiting for their confirmation, and what to settle once
/// they have it: at most this many at once. The agent goes on handling
/// deliveries meanwhile (a confirmation is a round trip to the server:
/// waiting for each before the next delivery made reliable runs round-trip
/// bound). A delivery is still settled only after what it caused is stored.
const UNCONFIRMED_WINDOW: usize = 64;

/// Sent, not yet confirmed; then the delivery that caused it, if any (a
/// source's production has none), to settle.
struct Pending<T: Transport> {
    unconfirmed: Option<T::Unconfirmed>,
    settle: Option<Settle<T::Delivery>>,
}

/// A delivery handled: what settling it needs.
struct Settle<D> {
    delivery: D,
    envelope: Arc<Envelope>,
    outcome: HandlerResult,
    answers: Vec<Envelope>,
}

struct Driver<'a, T: Transport> {
    agent_id: AgentId,
    transport: &'a T,
    stats: AgentRunStats,
    out: Outbox,
    /// Oldest first.
    pending: VecDeque<Pending<T>>,
}

impl<T: Transport> Driver<'_, T> {
    /// Sends what the agent put in its outbox; returns it, and what is
    /// left to confirm.
    async fn send(
        &mut self,
    ) -> Result<(Vec<Envelope>, Option<T::Unconfirmed>), AgentRunError<T::Error>> {
        self.send_as(false).await
    }

    /// [`send`](Self::send); `produced`: as a source's step.
    async fn send_as(
        &mut self,
        produced: bool,
    ) -> Result<(Vec<Envelope>, Option<T::Unconfirmed>), AgentRunError<T::Error>> {
        if self.out.is_empty() {
            return Ok((Vec::new(), None));
        }
        let sent: Vec<Envelope> = self.out.drain().collect();
        let unconfirmed = match produced {
            true => self.transport.send_produced(&sent).await,
            false => self.transport.send(&sent).await,
        }
        .map_err(AgentRunError::Transport)?;
        self.stats.published += sent.len() as u64;
        Ok((sent, unconfirmed))
    }

    /// Publishes what the agent put in its outbox and waits until it is
    /// stored (after everything sent before it).
    async fn publish(&mut self) -> Result<(), AgentRunError<T::Error>> {
        self.settle_all().await?;
        if let (_, Some(unconfirmed)) = self.send().await? {
            self.confirm(unconfirmed).await?;
        }
        Ok(())
    }

    async fn confirm(&self, unconfirmed: T::Unconfirmed) -> Result<(), AgentRunError<T::Error>> {
        self.transport
            .confirm(unconfirmed)
            .await
            .map_err(AgentRunError::Transport)
    }

    /// Queues what waits for a confirmation; beyond the window, completes
    /// the oldest first.
    async fn wait_for(&mut self, pending: Pending<T>) -> Result<(), AgentRunError<T::Error>> {
        self.pending.push_back(pending);
        while self.pending.len() > UNCONFIRMED_WINDOW {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Confirms the oldest pending publications, then settles their cause.
    async fn settle_oldest(&mut self) -> Result<(), AgentRunError<T::Error>> {
        let Some(pending) = self.pending.pop_front() else {
            return Ok(());
        };
        if let Some(unconfirmed) = pending.unconfirmed {
            self.confirm(unconfirmed).await?;
        }
        if let Some(handled) = pending.settle {
            return self.settle(handled).await;
        }
        Ok(())
    }

    /// Confirms and settles everything pending, oldest first.
    async fn settle_all(&mut self) -> Result<(), AgentRunError<T::Error>> {
        while !self.pending.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    async fn settle(&self, handled: Settle<T::Delivery>) -> Result<(), AgentRunError<T::Error>> {
        let Settle {
            delivery,
            envelope,
            outcome,
            answers,
        } = handled;
        self.transport
            .settle(delivery, &envelope, &self.agent_id, &outcome, &answers)
            .await
            .map_err(AgentRunError::Transport)
    }

    async fn drive(
        &mut self,
        agent: &mut Supervised,
        inbox: &mut Inbox<T::Delivery>,
        stop: &StopSignal,
        coordination: Coordination,
    ) -> Result<(), AgentRunError<T::Error>> {
        let mut produced_all = coordination.produced_all;
        let started = agent.start(&mut self.out);
        self.publish().await?;
        started.map_err(|error| RunError::StartFailed {
            agent: agent.id().clone(),
            error,
        })?;
        let mut producing = true;
        let mut produced = false;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut waiting = VecDeque::with_capacity(MAX_TAKE);
        loop {
            if stop.is_stopped() || agent.failure().is_some() {
                break;
            }
            if producing {
                // A source: produce a step (its confirmation may come while
                // the next is produced), then take whatever arrived meanwhile.
                let enough = coordination.stop_producing.as_ref();
                self.wait_for_step(agent, inbox, &mut waiting, stop, enough)
                    .await?;
                if stop.is_stopped() {
                    break;
                }
                let step = match enough.is_some_and(StopSignal::is_stopped) {
                    true => Produce::Done,
                    false => agent.produce(&mut self.out),
                };
                backoff(agent).await;
                if let (_, Some(unconfirmed)) = self.send_as(true).await? {
                    self.wait_for(Pending {
                        unconfirmed: Some(unconfirmed),
                        settle: None,
                    })
                    .await?;
                }
                if step == Produce::Done {
                    producing = false;
                    if let Some(told) = produced_all.take() {
                        let _ = told.send(());
                    }
                    self.settle_all().await?;
                    self.transport.flush().await;
                    // A source that has finished has nothing left to do on
                    // its own (its commands would start nothing): it ends.
                    // (An agent that never produced is not a source.)
                    let stays = coordination.stay_after_producing;
                    if !stays && (produced || agent.agent().subscriptions().is_empty()) {
                        break;
                    }
                } else {
                    produced = true;
                }
                while inbox.try_take(&mut waiting) {
                    self.take_all(agent, &mut waiting, stop).await?;
                }
                if step == Produce::Idle {
                    self.settle_all().await?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            // Nothing waits for a confirmation while the agent waits.
            self.settle_all().await?;
            let open = tokio::select! {
                open = inbox.take(&mut waiting) => open,
                _ = tick.tick() => true,
                _ = stop.stopped() => true,
            };
            self.take_all(agent, &mut waiting, stop).await?;
            if !open {
                break;
            }
            // Take what else has arrived before waiting again (a busy
            // stream then costs no wait set-up per message).
            while !stop.is_stopped() && agent.failure().is_none() && inbox.try_take(&mut waiting) {
                self.take_all(agent, &mut waiting, stop).await?;
            }
        }
        self.settle_all().await?;
        agent.stop(&mut self.out);
        self.publish().await?;
        self.transport.flush().await;
        Ok(())
    }

    /// Waits until the transport lets a source step, handling what arrives
    /// for it meanwhile (a health check, a command: what is waiting for
    /// it keeps the bus from being quiet), pausing as the transport says
    /// between looks (see [`Transport::pause`]).
    async fn wait_for_step(
        &mut self,
        agent: &mut Supervised,
        inbox: &mut Inbox<T::Delivery>,
        waiting: &mut VecDeque<T::Delivery>,
        stop: &StopSignal,
        enough: Option<&StopSignal>,
    ) -> Result<(), AgentRunError<T::Error>> {
        let mut looks = 0u32;
        let ended = || stop.is_stopped() || enough.is_some_and(StopSignal::is_stopped);
        while !self.transport.may_step() && !ended() {
            if inbox.try_take(waiting) {
                self.take_all(agent, waiting, stop).await?;
                looks = 0;
                continue;
            }
            // What is held for a next generation goes out once the bus is
            // quiet (normally on the last settle: this only makes sure).
            self.transport.flush().await;
            self.transport.pause(looks).await;
            looks += 1;
        }
        Ok(())
    }

    /// Takes the `waiting` deliveries in order, until `stop` or the
    /// agent's failure (what is left is dropped, as it would be with the
    /// inbox: JetStream redelivers it, core NATS never promised it).
    async fn take_all(
        &mut self,
        agent: &mut Supervised,
        waiting: &mut VecDeque<T::Delivery>,
        stop: &StopSignal,
    ) -> Result<(), AgentRunError<T::Error>> {
        while let Some(delivery) = waiting.pop_front() {
            if stop.is_stopped() || agent.failure().is_some() {
                waiting.clear();
                break;
            }
            self.take(agent, delivery).await?;
        }
        Ok(())
    }

    /// Opens a delivery, hands it to the agent, sends the answers, and
    /// settles it once they are stored: at once, or from the window of
    /// pending confirmations.
    async fn take(
        &mut self,
        agent: &mut Supervised,
        delivery: T::Delivery,
    ) -> Result<(), AgentRunError<T::Error>> {
        let opened = self
            .transport
            .open(&delivery, agent.id())
            .await
            .map_err(AgentRunError::Transport)?;
        let Some(envelope) = opened else {
            return Ok(());
        };
        self.stats.received += 1;
        let outcome = agent.deliver(&envelope, &mut self.out);
        backoff(agent).await;
        if let Err(error) = &outcome {
            tracing::warn!(agent = %agent.id(), message_id = %envelope.id, %error, "handler failed");
        }
        // What the agent published is stored before its cause is settled:
        // at once when there is nothing to wait for, else once confirmed.
        // (An empty outbox is checked here: even with nothing to send,
        // making the `send` future cost more than the check.)
        let (answers, unconfirmed) = match self.out.is_empty() {
            true => (Vec::new(), None),
            false => self.send().await?,
        };
        if !self.transport.settles(&delivery) {
            if unconfirmed.is_some() {
                self.wait_for(Pending {
                    unconfirmed,
                    settle: None,
                })
                .await?;
            }
            return Ok(());
        }
        let handled = Settle {
            delivery,
            envelope,
            outcome,
            answers,
        };
        if unconfirmed.is_none() && self.pending.is_empty() {
            return self.settle(handled).await;
        }
        self.wait_for(Pending {
            unconfirmed,
            settle: Some(handled),
        })
        .await
    }
}

/// The in-process [`MessageBus`] as a transport.
///
/// Each agent's subscription is [pulled](MessageBus::subscribe_pulled): the
/// agent's own thread takes its messages, one at a time in priority order,
/// with no hand-over between threads; a message counts as being handled
/// until the agent has handled it and what it published because of it is
/// queued, so [`MessageBus::is_quiet`] is exact, which is what
/// [`lockstep`](Self::lockstep) stands on. A handler error is retried or
/// dead-lettered per the subscription's retry policy.
#[derive(Clone)]
pub struct InProcess {
    bus: MessageBus,
    overflow: OverflowPolicy,
    lockstep: Option<Arc<Sequencer>>,
    /// Told when each candle a source produced is published.
    tick_to_order: Option<TickToOrder>,
    /// Every agent is a task on one thread (see [`InProcess::one_thread`]).
    one_thread: bool,
}

/// Lockstep's sequencer: a source's messages are published one at a time,
/// each once the bus is quiet; what agents publish while a generation is
/// being handled is held back until every message of that generation has
/// been handled (the bus is quiet), then published as the next
/// generation, in the [generation order](crate::bus::generation). Each
/// subscriber's priority queue then hands over exactly that order, even
/// while the generation is still being published (it arrives priority by
/// priority, highest first).
#[derive(Default)]
struct Sequencer {
    state: std::sync::Mutex<Sequence>,
    /// Messages held back (read without the lock on every settle).
    held: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Sequence {
    publishers: Publishers,
    /// The next generation, in publish order.
    next: Vec<Envelope>,
    /// A source's messages not yet published: each starts a cascade of
    /// generations of its own, once the one before has ended.
    roots: VecDeque<Envelope>,
    /// A generation is being published: no other may start meanwhile.
    publishing: bool,
    /// Generations published so far.
    generations: u64,
}

impl Sequencer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sequence> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, envelopes: &[Envelope], produced: bool) {
        let mut state = self.lock();
        match produced {
            true => state.roots.extend(envelopes.iter().cloned()),
            false => state.next.extend_from_slice(envelopes),
        }
        self.held.fetch_add(envelopes.len(), Ordering::Release);
    }

    /// The state, locked, if the bus was quiet and no generation was
    /// published meanwhile (a quiet bus seen before another thread
    /// published a generation, and its first effects were held, says
    /// nothing about that generation).
    fn lock_if_quiet(&self, bus: &MessageBus) -> Option<std::sync::MutexGuard<'_, Sequence>> {
        let published = {
            let state = self.lock();
            if state.publishing {
                return None;
            }
            state.generations
        };
        if !bus.is_quiet() {
            return None;
        }
        let state = self.lock();
        (!state.publishing && state.generations == published).then_some(state)
    }

    /// The bus is quiet and nothing is held back for a next generation.
    fn is_quiet(&self, bus: &MessageBus) -> bool {
        self.lock_if_quiet(bus)
            .is_some_and(|state| state.next.is_empty() && state.roots.is_empty())
    }

    /// Publishes the held generation once the bus is quiet; again, if the
    /// bus became quiet while it was published (the last settle then found
    /// a generation being published and left it to this call).
    async fn advance(
        &self,
        bus: &MessageBus,
        clock: Option<&TickToOrder>,
    ) -> Result<(), InProcessError> {
        loop {
            if self.held.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            let generation = {
                let Some(mut state) = self.lock_if_quiet(bus) else {
                    return Ok(());
                };
                // What the last generation caused, else the source's next.
                let mut generation = if !state.next.is_empty() {
                    std::mem::take(&mut state.next)
                } else if let Some(root) = state.roots.pop_front() {
                    // A step's candles are published one at a time: each
                    // is timed from its own publication.
                    stamp(clock, &root);
                    vec![root]
                } else {
                    return Ok(());
                };
                state.publishing = true;
                state.generations += 1;
                self.held.fetch_sub(generation.len(), Ordering::AcqRel);
                state.publishers.order(&mut generation);
                generation
            };
            let mut published = Ok(());
            for envelope in generation {
                published = bus.publish(envelope).await.map(|_| ());
                if published.is_err() {
                    break;
                }
            }
            self.lock().publishing = false;
            published?;
        }
    }
}

/// Tells `clock` that the candle in `envelope`, if it is one, is published now.
fn stamp(clock: Option<&TickToOrder>, envelope: &Envelope) {
    if let (Some(clock), Payload::DataCandle(candle)) = (clock, envelope.payload()) {
        clock.candle(candle.symbol.as_str(), candle.open_time_ms);
    }
}

impl InProcess {
    /// Carries agents on `bus`.
    pub fn new(bus: MessageBus) -> Self {
        Self {
            bus,
            overflow: OverflowPolicy::default(),
            lockstep: None,
            tick_to_order: None,
            one_thread: false,
        }
    }

    /// Every agent it carries runs as a task on one thread: an agent whose
    /// queue is empty gives the thread up at once (no spin, no yield of the
    /// CPU: the others are on it), and a source waiting for a quiet bus
    /// lets them run. A message from one agent to the next then wakes no
    /// other thread.
    pub fn one_thread(mut self, on: bool) -> Self {
        self.one_thread = on;
        self
    }

    /// Tells `clock` when each candle a source produced is published: the
    /// start of its tick-to-order latency (in lockstep a step's candles
    /// wait their turn, one cascade after another, before that).
    pub fn with_tick_to_order(mut self, clock: Option<TickToOrder>) -> Self {
        self.tick_to_order = clock;
        self
    }

    /// What an agent's subscription does when its queue is full.
    pub fn with_overflow(mut self, overflow: OverflowPolicy) -> Self {
        self.overflow = overflow;
        self
    }

    /// Sources wait for the bus to be quiet (every message handled,
    /// everything it caused handled too) before each step. A step of
    /// market data is then fully worked through — signals, orders, risk
    /// checks, fills, a risk stop — before the next one is published, as
    /// in a backtest, generation by generation in the
    /// [generation order](crate::bus::generation), while the agents still
    /// run on their own threads: every agent gets the messages the inline
    /// bus would give it, in the same order. A source waits for the quiet
    /// bus on its own thread, yielding the CPU and sleeping briefly, or,
    /// when the agents share one thread ([`InProcess::one_thread`]),
    /// yielding it to them.
    pub fn lockstep(mut self, on: bool) -> Self {
        self.lockstep = on.then(Arc::default);
        self
    }

    /// Every message handled, everything it caused handled too, and
    /// nothing held back for the next generation.
    pub fn is_quiet(&self) -> bool {
        match &self.lockstep {
            Some(sequencer) => sequencer.is_quiet(&self.bus),
            None => self.bus.is_quiet(),
        }
    }

    /// The bus.
    pub fn bus(&self) -> &MessageBus {
        &self.bus
    }

    fn clock(&self) -> Option<&TickToOrder> {
        self.tick_to_order.as_ref()
    }

    /// Publishes `envelopes`, or, in lockstep, hands them to the sequencer
    /// (`produced`: a source's step, published one message at a time).
    async fn send_held(
        &self,
        envelopes: &[Envelope],
        produced: bool,
    ) -> Result<Option<std::convert::Infallible>, InProcessError> {
        if let Some(sequencer) = &self.lockstep {
            sequencer.hold(envelopes, produced);
            sequencer.advance(&self.bus, self.clock()).await?;
            return Ok(None);
        }
        for envelope in envelopes {
            if produced {
                stamp(self.clock(), envelope);
            }
            self.bus.publish(envelope.clone()).await?;
        }
        Ok(None)
    }
}

/// Why the in-process transport failed.
#[derive(Debug, thiserror::Error)]
pub enum InProcessError {
    /// A publish was refused.
    #[error(transparent)]
    Publish(#[from] crate::bus::error::PublishError),
    /// The subscription was refused.
    #[error("cannot subscribe {agent}: {error}")]
    Subscribe {
        /// The agent.
        agent: AgentId,
        /// Why.
        #[source]
        error: crate::bus::SubscribeError,
    },
}

/// One message taken by an agent, and the subscription to settle it on.
pub struct InProcessDelivery {
    envelope: Arc<Envelope>,
    pulled: Arc<std::sync::Mutex<Pulled>>,
}

fn lock_pulled(pulled: &std::sync::Mutex<Pulled>) -> std::sync::MutexGuard<'_, Pulled> {
    pulled.lock().unwrap_or_else(|p| p.into_inner())
}

/// An agent's pulled subscription as its inbox.
struct PulledDeliveries {
    pulled: Arc<std::sync::Mutex<Pulled>>,
    doorbell: flume::Receiver<()>,
    /// The doorbell wait in progress, once polled.
    ringing: Option<flume::r#async::RecvFut<'static, ()>>,
    /// Empty looks since the last message.
    looks: u32,
    /// Empty looks, each yielding the CPU, before it waits for the
    /// doorbell (none when agents share one thread).
    looks_before_waiting: u32,
}

impl Deliveries<InProcessDelivery> for PulledDeliveries {
    fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        into: &mut VecDeque<InProcessDelivery>,
    ) -> std::task::Poll<bool> {
        use std::task::Poll;
        loop {
            let mut pulled = lock_pulled(&self.pulled);
            if pulled.is_holding() {
                // The driver settles each delivery before it waits again.
                return Poll::Ready(true);
            }
            match pulled.next(true) {
                Pull::Message(envelope) => {
                    drop(pulled);
                    self.ringing = None;
                    self.looks = 0;
                    into.push_back(InProcessDelivery {
                        envelope,
                        pulled: self.pulled.clone(),
                    });
                    return Poll::Ready(true);
                }
                Pull::Closed => return Poll::Ready(false),
                Pull::Empty => {}
            }
            drop(pulled);
            // As the bus's own consumers do: look a few times, yielding the
            // CPU, before sleeping. Under a steady stream this saves a
            // thread wake-up per message, which dominated `bistoury run`.
            // (`next(true)` above asked for the doorbell: a message queued
            // meanwhile rings it, and the wait below returns at once.)
            if self.ringing.is_none() && self.looks < self.looks_before_waiting {
                self.looks += 1;
                std::thread::yield_now();
                continue;
            }
            self.looks = 0;
            let doorbell = &self.doorbell;
            let ringing = self
                .ringing
                .get_or_insert_with(|| doorbell.clone().into_recv_async());
            match std::pin::Pin::new(ringing).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(rang) => {
                    self.ringing = None;
                    if rang.is_err() {
                        return Poll::Ready(false);
                    }
                }
            }
        }
    }

    fn try_take(&mut self, into: &mut VecDeque<InProcessDelivery>) -> bool {
        match lock_pulled(&self.pulled).next(false) {
            Pull::Message(envelope) => {
                into.push_back(InProcessDelivery {
                    envelope,
                    pulled: self.pulled.clone(),
                });
                true
            }
            Pull::Empty | Pull::Closed => false,
        }
    }
}

impl Transport for InProcess {
    type Delivery = InProcessDelivery;
    type Error = InProcessError;
    /// The bus has what it was given: nothing is left to confirm.
    type Unconfirmed = std::convert::Infallible;

    async fn subscribe(
        &self,
        agent: &AgentId,
        mut patterns: Vec<TopicPattern>,
    ) -> Result<Inbox<Self::Delivery>, Self::Error> {
        patterns.push(crate::runtime::driver::health_check_pattern());
        if let Some(sequencer) = &self.lockstep {
            sequencer.lock().publishers.register(agent);
        }
        let patterns: Vec<&str> = patterns.iter().map(|p| p.as_str()).collect();
        let options = SubscribeOptions::named(agent.as_str()).with_overflow(self.overflow);
        let pulled = self
            .bus
            .subscribe_pulled(&patterns, options)
            .map_err(|error| InProcessError::Subscribe {
                agent: agent.clone(),
                error,
            })?;
        let doorbell = pulled.doorbell().clone();
        let pulled = Arc::new(std::sync::Mutex::new(pulled));
        let deliveries = PulledDeliveries {
            pulled,
            doorbell,
            ringing: None,
            looks: 0,
            looks_before_waiting: match self.one_thread {
                true => 0,
                false => SPINS_BEFORE_SLEEP,
            },
        };
        // Dropping the inbox drops the subscription (its `Drop` unsubscribes).
        Ok(Inbox::new(deliveries, || {}))
    }

    async fn send(&self, envelopes: &[Envelope]) -> Result<Option<Self::Unconfirmed>, Self::Error> {
        self.send_held(envelopes, false).await
    }

    async fn send_produced(
        &self,
        envelopes: &[Envelope],
    ) -> Result<Option<Self::Unconfirmed>, Self::Error> {
        self.send_held(envelopes, true).await
    }

    async fn confirm(&self, unconfirmed: Self::Unconfirmed) -> Result<(), Self::Error> {
        match unconfirmed {}
    }

    async fn open(
        &self,
        delivery: &Self::Delivery,
        _agent: &AgentId,
    ) -> Result<Option<Arc<Envelope>>, Self::Error> {
        Ok(Some(delivery.envelope.clone()))
    }

    async fn settle(
        &self,
        delivery: Self::Delivery,
        _envelope: &Envelope,
        _agent: &AgentId,
        outcome: &HandlerResult,
        _answers: &[Envelope],
    ) -> Result<(), Self::Error> {
        lock_pulled(&delivery.pulled).settle(outcome);
        match &self.lockstep {
            Some(sequencer) => sequencer.advance(&self.bus, self.clock()).await,
            None => Ok(()),
        }
    }

    async fn flush(&self) {
        if let Some(sequencer) = &self.lockstep {
            // A publish refused here was refused to a send or settle before,
            // which reported it.
            let _ = sequencer.advance(&self.bus, self.clock()).await;
        }
    }

    fn may_step(&self) -> bool {
        self.lockstep.is_none() || self.is_quiet()
    }

    async fn pause(&self, looks: u32) {
        match self.one_thread {
            // The agents that must finish first are on this thread.
            true => tokio::task::yield_now().await,
            false => pause_on_own_thread(looks),
        }
    }
}
