//! What arrives: core NATS subscriptions and JetStream pull consumers,
//! merged into one stream of deliveries for an agent.

use std::time::Duration;

use futures_util::stream::StreamExt;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::model::topic::TopicPattern;
use crate::nats::jetstream::{consumer_name, plan, JetStreamSettings};
use crate::runtime::transport::{Channel, Deliveries, MAX_TAKE};
use crate::runtime::{Partition, StopSignal};

use super::bus::*;
use super::client::*;

/// A message as it arrived: from a core subscription or a durable
/// JetStream consumer (to be acknowledged).
pub(super) enum Incoming {
    Core(CoreMessage),
    Durable(Box<async_nats::jetstream::Message>),
}

/// What the agent's side needs of a core NATS message. (The whole message
/// is about twice the size, and the delivery holding it is moved several
/// times on its way to the agent: a copy each time.)
pub(super) struct CoreMessage {
    pub(super) subject: async_nats::Subject,
    pub(super) payload: bytes::Bytes,
    /// The inbox of a request.
    pub(super) reply: Option<async_nats::Subject>,
}

impl From<async_nats::Message> for CoreMessage {
    fn from(message: async_nats::Message) -> Self {
        Self {
            subject: message.subject,
            payload: message.payload,
            reply: message.reply,
        }
    }
}

/// Subscribes to everything `agent` wants: core subscriptions (returned,
/// read by the agent's task), and one durable consumer per subject of a
/// JetStream family, read by tasks (returned, to be aborted at the end)
/// that feed what arrives to `to`.
pub(super) async fn subscribe(
    bus: &NatsBus,
    agent: &str,
    mut patterns: Vec<TopicPattern>,
    to: flume::Sender<NatsDelivery>,
    screen: &Screen,
    stop: &StopSignal,
) -> Result<(CoreSubscriptions, Vec<tokio::task::JoinHandle<()>>), NatsError> {
    patterns.push(crate::runtime::driver::health_check_pattern());
    let partition = screen.partition;
    let settings = bus.reliable.as_ref().map(|r| r.settings());
    let (mut core, mut readers) = (Vec::new(), Vec::new());
    for pattern in &patterns {
        for nats_subject in subjects(&bus.prefix, pattern) {
            let plan = plan(settings, &bus.prefix, &nats_subject);
            if let Some(subject) = plan.core {
                let subscriber = bus.client.subscribe(subject.clone()).await.map_err(|e| {
                    NatsError::Subscribe {
                        subject: subject.clone(),
                        reason: e.to_string(),
                    }
                })?;
                core.push(subscriber);
            }
            for (family, filter) in plan.durable {
                let reliable = bus.reliable.as_ref().expect("durable plans need JetStream");
                // Every instance sees every message (and keeps its own
                // share), so each needs a consumer of its own.
                let name = match partition.count {
                    1 => consumer_name(agent, &filter),
                    _ => consumer_name(&format!("{agent}_{}", partition.label()), &filter),
                };
                let consumer = reliable.consumer(&family, &name, &filter).await?;
                readers.push(tokio::spawn(read_consumer(
                    consumer,
                    name,
                    bus.reconnections.clone(),
                    to.clone(),
                    screen.clone(),
                    stop.clone(),
                )));
            }
        }
    }
    Ok((CoreSubscriptions::new(core, screen.clone()), readers))
}

/// An agent's core NATS subscriptions, read together by the agent's task,
/// in the order they woke it (messages from different subscriptions then
/// keep the order the server sent them in; a paced distributed run depends
/// on it). Each subscription is polled with a waker of its own, which
/// queues it: a poll reads only the subscriptions that may have something.
/// (`select_all` did the same at ~650 instructions a message more than
/// reading a subscription alone, allocating a task node per message;
/// polling every subscription each time saved nothing, the idle ones'
/// polls costing as much, and lost the order.)
pub(super) struct CoreSubscriptions {
    /// By index; `None` once ended.
    pub(super) subscribers: Vec<Option<async_nats::Subscriber>>,
    pub(super) screen: Screen,
    pub(super) wakers: Vec<std::task::Waker>,
    pub(super) flags: Vec<Arc<ReadyFlag>>,
    pub(super) live: usize,
    pub(super) woken: Arc<Woken>,
}

/// The subscriptions that may have a message, in the order they woke;
/// and the agent's task, woken with them.
#[derive(Default)]
pub(super) struct Woken {
    pub(super) queue: std::sync::Mutex<VecDeque<usize>>,
    pub(super) task: futures_util::task::AtomicWaker,
}

/// One subscription's waker: queues it (once) and wakes the task.
pub(super) struct ReadyFlag {
    pub(super) index: usize,
    /// Whether the subscription is queued.
    pub(super) queued: std::sync::atomic::AtomicBool,
    pub(super) woken: Arc<Woken>,
}

impl ReadyFlag {
    /// Queues the subscription unless it is queued already.
    pub(super) fn queue(&self) {
        if !self.queued.swap(true, std::sync::atomic::Ordering::AcqRel) {
            lock(&self.woken.queue).push_back(self.index);
        }
    }
}

impl std::task::Wake for ReadyFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.queue();
        self.woken.task.wake();
    }
}

impl CoreSubscriptions {
    pub(super) fn new(subscribers: Vec<async_nats::Subscriber>, screen: Screen) -> Self {
        let woken = Arc::new(Woken::default());
        let flags: Vec<Arc<ReadyFlag>> = (0..subscribers.len())
            .map(|index| {
                Arc::new(ReadyFlag {
                    index,
                    queued: false.into(),
                    woken: woken.clone(),
                })
            })
            .collect();
        // Each may have something at first.
        flags.iter().for_each(|flag| flag.queue());
        Self {
            live: subscribers.len(),
            subscribers: subscribers.into_iter().map(Some).collect(),
            screen,
            wakers: flags.iter().map(|flag| flag.clone().into()).collect(),
            flags,
            woken,
        }
    }

    /// Takes what is waiting, up to [`MAX_TAKE`] messages, onto the back
    /// of `into`: one from each woken subscription in turn, as long as any
    /// has one. Pending when none has; ready with `false` once every
    /// subscription has ended (after the messages taken, if any).
    pub(super) fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        into: &mut VecDeque<NatsDelivery>,
    ) -> std::task::Poll<bool> {
        use std::sync::atomic::Ordering;
        use std::task::Poll;
        // Before reading: a message arriving meanwhile wakes the task.
        self.woken.task.register(cx.waker());
        let mut taken = 0;
        while self.live > 0 && taken < MAX_TAKE {
            let Some(index) = lock(&self.woken.queue).pop_front() else {
                break;
            };
            self.flags[index].queued.store(false, Ordering::Release);
            let Some(subscriber) = &mut self.subscribers[index] else {
                continue;
            };
            let mut own = std::task::Context::from_waker(&self.wakers[index]);
            match subscriber.poll_next_unpin(&mut own) {
                Poll::Ready(Some(message)) => {
                    into.push_back(NatsDelivery::core(message, &self.screen));
                    taken += 1;
                    // There may be more: its turn comes after the others'.
                    self.flags[index].queue();
                }
                Poll::Ready(None) => {
                    // Ended (only when the client goes).
                    self.subscribers[index] = None;
                    self.live -= 1;
                }
                Poll::Pending => {}
            }
        }
        match (taken, self.live) {
            (1.., live) => Poll::Ready(live > 0),
            (0, 0) => Poll::Ready(false),
            (0, _) => Poll::Pending,
        }
    }
}

/// How long one pull request waits at the server for messages.
pub(super) const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How often the server says a pull is alive while it has nothing.
pub(super) const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// Pulls from a durable consumer into `to`, starting over after errors
/// (missed heartbeats, a consumer the server does not have yet) with
/// backoff, and after every reconnection of the client.
///
/// The client's own pull stream re-issues its pull request when it sees
/// the connection come back, but it can miss a reconnection that happens
/// while it is not watching; it then waits for its request to expire (35
/// s) before pulling from the new server, and the consumer stalls
/// meanwhile (test
/// `a_server_killed_mid_run_loses_no_acknowledged_message_and_exactly_once_stays_once`
/// saw stalls of 30-60 s under load). A fresh pull stream after each
/// reconnection never waits on that. A pull request the old stream left on
/// the server goes away with its subscription: the server skips requests
/// nobody listens to, and a message already sent to one comes back after
/// `ack_wait`.
pub(super) async fn read_consumer(
    consumer: async_nats::jetstream::consumer::Consumer<
        async_nats::jetstream::consumer::pull::Config,
    >,
    name: String,
    reconnections: Reconnections,
    to: flume::Sender<NatsDelivery>,
    screen: Screen,
    stop: StopSignal,
) {
    let mut wait = Duration::from_millis(50);
    while !stop.is_stopped() {
        let connected_as = reconnections.count();
        // Short pulls with frequent heartbeats: a pull waiting at a server
        // (or, in a cluster, at a consumer leader) that died is noticed
        // within seconds by its missing heartbeats and made again, where
        // the client's defaults (30 s, 15 s) left the agent idle for most
        // of a minute.
        let pull = consumer
            .stream()
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages();
        match pull.await {
            Ok(mut messages) => {
                let reconnected = reconnections.since(connected_as);
                tokio::pin!(reconnected);
                loop {
                    tokio::select! {
                        biased;
                        item = messages.next() => match item {
                            Some(Ok(message)) => {
                                wait = Duration::from_millis(50);
                                let delivery = NatsDelivery::new(
                                    Incoming::Durable(Box::new(message)),
                                    &screen,
                                );
                                if to.send_async(delivery).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(error)) => {
                                tracing::warn!(consumer = %name, %error, "JetStream consumer interrupted");
                                break;
                            }
                            None => break,
                        },
                        () = &mut reconnected => {
                            tracing::info!(consumer = %name, "reconnected; pulling from the server afresh");
                            wait = Duration::ZERO;
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(consumer = %name, %error, retry_in = ?wait, "cannot read JetStream consumer");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
    }
}

/// Decides from the subject alone what an arrival is to one agent
/// instance, so that what it will skip is never decoded.
#[derive(Clone)]
pub(super) struct Screen {
    pub(super) prefix: String,
    pub(super) partition: Partition,
    /// The topic segment that keys the agent's state, if any.
    pub(super) segment: Option<usize>,
    pub(super) reliable: Option<JetStreamSettings>,
}

/// What a [`Screen`] made of an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The agent's to handle.
    Take,
    /// A JetStream family heard on a core wildcard subscription: its
    /// consumer delivers it.
    JetStreamFamily,
    /// Another instance's share (see [`Partition`]).
    OtherPartition,
}

impl Screen {
    pub(super) fn topic_of<'s>(&self, subject: &'s str) -> &'s str {
        subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|t| t.strip_prefix('.'))
            .unwrap_or(subject)
    }

    pub(super) fn look(&self, subject: &str, core: bool) -> Verdict {
        let topic = self.topic_of(subject);
        if core && self.reliable.as_ref().is_some_and(|r| r.carries(topic)) {
            return Verdict::JetStreamFamily;
        }
        if self.partition.count > 1 {
            if let Some(key) = self.segment.and_then(|n| topic.split('.').nth(n)) {
                if !self.partition.owns(key) {
                    return Verdict::OtherPartition;
                }
            }
        }
        Verdict::Take
    }
}

/// A NATS message as it arrived, screened as it is taken (decoded only
/// when opened, for the agent, on the agent's task: decoding on a reading
/// task between the subscriptions and the agent cost more end to end).
pub struct NatsDelivery {
    pub(super) incoming: Incoming,
    pub(super) verdict: Verdict,
}

impl NatsDelivery {
    /// A core message taken from a subscription.
    pub(super) fn core(message: async_nats::Message, screen: &Screen) -> Self {
        Self::new(Incoming::Core(message.into()), screen)
    }

    pub(super) fn new(incoming: Incoming, screen: &Screen) -> Self {
        let verdict = match &incoming {
            Incoming::Core(m) => screen.look(&m.subject, true),
            Incoming::Durable(m) => screen.look(&m.subject, false),
        };
        Self { incoming, verdict }
    }
}

/// What reaches an agent: its core subscriptions, read by its own task, and
/// what the readers of its durable consumers pass on, if it has any.
pub(super) struct NatsDeliveries {
    pub(super) core: CoreSubscriptions,
    pub(super) core_open: bool,
    pub(super) durable: Option<Channel<NatsDelivery>>,
}

impl Deliveries<NatsDelivery> for NatsDeliveries {
    fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        into: &mut VecDeque<NatsDelivery>,
    ) -> std::task::Poll<bool> {
        use std::task::Poll;
        let before = into.len();
        if self.core_open {
            if let Poll::Ready(open) = self.core.poll_take(cx, into) {
                self.core_open = open;
            }
        }
        let mut durable_open = false;
        if let Some(durable) = &mut self.durable {
            durable_open = match durable.poll_take(cx, into) {
                Poll::Ready(open) => open,
                Poll::Pending => true,
            };
            if !durable_open {
                self.durable = None;
            }
        }
        let open = self.core_open || durable_open;
        match into.len() > before || !open {
            true => Poll::Ready(open),
            false => Poll::Pending,
        }
    }

    fn try_take(&mut self, into: &mut VecDeque<NatsDelivery>) -> bool {
        let before = into.len();
        if self.core_open {
            // Polled without the task's waker: the next `poll_take`
            // registers it again before looking (what arrives meanwhile
            // stays queued).
            let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
            if let std::task::Poll::Ready(open) = self.core.poll_take(&mut cx, into) {
                self.core_open = open;
            }
        }
        if let Some(durable) = &mut self.durable {
            durable.try_take(into);
        }
        into.len() > before
    }
}
