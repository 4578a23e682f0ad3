//! The reliable modes over NATS: JetStream streams and durable consumers.
//!
//! Which topics travel through JetStream is configuration: a list of topic
//! *families* (first topic segment: `data`, `signal`, `trade`...). Each
//! family gets one stream, `<PREFIX>_<FAMILY>` (upper case), holding the
//! subjects `<prefix>.<family>.>`, file storage, interest retention (a
//! message is kept until every consumer that was there when it arrived has
//! acknowledged it), and a duplicate window. Families not listed stay on
//! core NATS (fire-and-forget).
//!
//! * Publishing on a JetStream family goes through the JetStream API with
//!   the envelope id as `Nats-Msg-Id`: a publish counts as done only when
//!   the stream has acknowledged it, and one retried after a lost
//!   acknowledgement is dropped by the stream as a duplicate (inside the
//!   duplicate window). While the server is away publishing retries with
//!   backoff: the publisher blocks rather than losing anything. With
//!   [`JetStreamSettings::deduplicate_publishes`] off, at-least-once
//!   envelopes go without the id (the stream skips its duplicate check, at
//!   the price of storing a retried publish twice); exactly-once ones
//!   always carry it.
//! * An agent subscribing to a JetStream family gets one durable pull
//!   consumer per subject (`<agent>_<subject>`, sanitised), with explicit
//!   acks. A message is acknowledged only after the agent has handled it
//!   and everything the agent published in answer has been acknowledged in
//!   turn, so a crash anywhere repeats work rather than losing it. A failed
//!   handler naks with the configured backoff; after `max_deliver`
//!   deliveries the message is dead-lettered on `system.dead_letter` and
//!   terminated. An unacknowledged message comes back after `ack_wait`
//!   (the agent died, or the server lost the ack).
//! * Exactly-once envelopes (`delivery_mode = exactly_once`) are also
//!   checked against a window of ids this consumer already handled, and
//!   acknowledged with a double ack (the server confirms it has the ack),
//!   so a redelivery after a lost ack is not handled twice. The window is
//!   in memory: a consumer process that dies between handling and acking
//!   handles that message again when restarted.
//! * Several processes running the same agent share its durable consumers:
//!   each message goes to one of them (JetStream's queue group).
//!
//! Streams carry Bistoury's mark: metadata `bistoury.subjects` naming the
//! subjects they were created for (`<prefix>.<family>.>`). A stream of the
//! right name without that mark was made by someone else: agents refuse to
//! write into it, and a run never deletes it (unless told to with
//! `fresh`), because a name that matches is not proof of ownership.
//!
//! Requests (NATS request-reply) must stay on core families: a stream
//! answers a request on its subjects with its own publish acknowledgement.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;

use crate::model::ids::MessageId;
use crate::model::DeliveryMode;
use crate::nats::client::{subject, NatsError, Reconnections};
use crate::runtime::StopSignal;

/// How the reliable modes use JetStream.
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamSettings {
    /// Topic families (first topic segment) carried by JetStream.
    pub families: Vec<String>,
    /// How long a stream remembers message ids to drop republished ones.
    pub duplicate_window: Duration,
    /// How long a delivered message may stay unacknowledged before it is
    /// delivered again.
    pub ack_wait: Duration,
    /// Deliveries before a message is dead-lettered.
    pub max_deliver: i64,
    /// Waits before the 1st, 2nd... redelivery after a failure (the last
    /// repeats). Empty: `ack_wait`.
    pub backoff: Vec<Duration>,
    /// Messages a consumer may have delivered and not yet acknowledged.
    pub max_ack_pending: i64,
    /// Ids of exactly-once messages each consumer remembers.
    pub dedupe_window: usize,
    /// At-least-once publishes carry the envelope id as `Nats-Msg-Id`, so
    /// that the stream stores a retried one once (as it always does for
    /// exactly-once publishes). Off: they go without it, which spares the
    /// stream its duplicate check (faster: figures in BENCHMARKS.md) but
    /// lets a publish retried after a lost acknowledgement reach consumers
    /// twice, which at-least-once allows.
    pub deduplicate_publishes: bool,
    /// Copies of each stream a NATS cluster keeps (1 on a single server;
    /// 3 on a three-node cluster survives the loss of one node).
    pub replicas: usize,
}

impl Default for JetStreamSettings {
    fn default() -> Self {
        Self {
            families: Vec::new(),
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: vec![Duration::from_millis(100), Duration::from_secs(1)],
            max_ack_pending: 1000,
            dedupe_window: 100_000,
            deduplicate_publishes: true,
            replicas: 1,
        }
    }
}

impl JetStreamSettings {
    /// True when messages on `topic` travel through JetStream.
    pub fn carries(&self, topic: &str) -> bool {
        let family = topic.split('.').next().unwrap_or("");
        self.families.iter().any(|f| f == family)
    }

    /// The wait before redelivering a message that failed on its
    /// `delivered`-th delivery.
    pub fn redelivery_delay(&self, delivered: i64) -> Duration {
        let index = (delivered.max(1) - 1) as usize;
        match self.backoff.get(index).or(self.backoff.last()) {
            Some(delay) => *delay,
            None => self.ack_wait,
        }
    }
}

/// The stream that holds a family: `<PREFIX>_<FAMILY>` in upper case, with
/// any character a stream name cannot have replaced by `_`.
pub fn stream_name(prefix: &str, family: &str) -> String {
    sanitise(&format!("{prefix}_{family}")).to_uppercase()
}

/// The metadata key of Bistoury's mark on its streams.
pub const MARK_KEY: &str = "bistoury.subjects";

/// The subjects of a family's stream, `<prefix>.<family>.>`: also what
/// its mark says it was created for.
fn mark(prefix: &str, family: &str) -> String {
    subject(prefix, &format!("{family}.>"))
}

/// True when `config` carries Bistoury's mark for `prefix` and `family`.
fn is_ours(config: &stream::Config, prefix: &str, family: &str) -> bool {
    config.metadata.get(MARK_KEY) == Some(&mark(prefix, family))
}

/// The error for a stream of our name that is not ours.
fn foreign(name: &str, prefix: &str, family: &str, config: &stream::Config) -> NatsError {
    NatsError::ForeignStream {
        stream: name.to_string(),
        subjects: mark(prefix, family),
        found: config
            .metadata
            .get(MARK_KEY)
            .cloned()
            .unwrap_or_else(|| "no Bistoury mark".into()),
    }
}

/// The durable consumer of `agent` for `subject`.
pub fn consumer_name(agent: &str, subject: &str) -> String {
    sanitise(&format!("{agent}_{subject}"))
}

fn sanitise(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '*' => 'S',
            '>' => 'G',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => c,
            _ => '_',
        })
        .collect()
}

/// A connection's JetStream side: the context and the settings.
#[derive(Clone)]
pub struct Reliable {
    context: jetstream::Context,
    settings: JetStreamSettings,
    prefix: String,
    reconnections: Reconnections,
}

impl std::fmt::Debug for Reliable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reliable")
            .field("settings", &self.settings)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// One JetStream publish waiting for its acknowledgement.
pub(crate) struct InFlight {
    subject: String,
    id: MessageId,
    /// Whether the publish carries `id` as `Nats-Msg-Id`.
    deduplicated: bool,
    bytes: Bytes,
    ack: Option<jetstream::context::PublishAckFuture>,
    /// The client's connections when it was last sent.
    sent_on: u64,
}

impl Reliable {
    /// Makes sure every family's stream exists (creating missing ones) and
    /// returns the JetStream side of `client`.
    pub async fn open(
        client: async_nats::Client,
        prefix: &str,
        settings: JetStreamSettings,
    ) -> Result<Self, NatsError> {
        let reconnections = Reconnections::of(&client);
        let context = jetstream::new(client);
        for family in &settings.families {
            // A cluster still forming, or still placing a stream another
            // agent just created, answers late: such a request is tried
            // again until STREAM_READY_LIMIT, a foreign stream never.
            let started = std::time::Instant::now();
            loop {
                match ensure_stream(&context, prefix, family, &settings).await {
                    Ok(()) => break,
                    Err(NatsError::JetStream { what, reason })
                        if started.elapsed() < STREAM_READY_LIMIT =>
                    {
                        tracing::warn!(%what, %reason, "JetStream not ready; trying again");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(Self {
            context,
            settings,
            prefix: prefix.to_string(),
            reconnections,
        })
    }

    /// Deletes the streams of `families` under `prefix` (and with them
    /// their consumers and whatever they still held), if they exist and
    /// carry Bistoury's mark for those subjects; returns the names of those
    /// deleted. For a run that replays its data from the start: what an
    /// earlier run left (unacknowledged messages, consumers of agents no
    /// longer configured) must not reach it. A stream of the same name
    /// without the mark is refused ([`NatsError::ForeignStream`]), and
    /// nothing is deleted, unless `fresh` says to delete it all the same.
    pub async fn reset(
        client: async_nats::Client,
        prefix: &str,
        families: &[String],
        fresh: bool,
    ) -> Result<Vec<String>, NatsError> {
        let context = jetstream::new(client);
        let mut doomed = Vec::new();
        for family in families {
            let name = stream_name(prefix, family);
            if let Some(existing) = existing_stream(&context, &name).await? {
                if !fresh && !is_ours(&existing, prefix, family) {
                    return Err(foreign(&name, prefix, family, &existing));
                }
                doomed.push(name);
            }
        }
        for name in &doomed {
            context
                .delete_stream(name)
                .await
                .map_err(|e| NatsError::JetStream {
                    what: format!("stream {name}"),
                    reason: e.to_string(),
                })?;
        }
        Ok(doomed)
    }

    /// The settings.
    pub fn settings(&self) -> &JetStreamSettings {
        &self.settings
    }

    /// The JetStream context (for tools and tests).
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// Starts publishing `bytes` (an envelope with id `id`, in `mode`) on
    /// `subject`; [`Reliable::confirm`] waits for the stream's
    /// acknowledgement.
    pub(crate) async fn start_publish(
        &self,
        subject: String,
        id: MessageId,
        mode: DeliveryMode,
        bytes: Bytes,
    ) -> InFlight {
        let deduplicated = mode == DeliveryMode::ExactlyOnce || self.settings.deduplicate_publishes;
        let mut publish = InFlight {
            subject,
            id,
            deduplicated,
            bytes,
            ack: None,
            sent_on: 0,
        };
        self.send(&mut publish).await;
        publish
    }

    /// Sends `publish` (again), noting the connection it went out on.
    async fn send(&self, publish: &mut InFlight) {
        publish.sent_on = self.reconnections.count();
        publish.ack = self.try_send(publish).await.ok();
    }

    async fn try_send(
        &self,
        publish: &InFlight,
    ) -> Result<jetstream::context::PublishAckFuture, String> {
        let mut message =
            jetstream::message::PublishMessage::build().payload(publish.bytes.clone());
        if publish.deduplicated {
            message = message.message_id(publish.id.to_string());
        }
        self.context
            .send_publish(publish.subject.clone(), message)
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits until the stream has acknowledged `publish`, publishing it
    /// again (same `Nats-Msg-Id`, so never stored twice within the
    /// duplicate window, unless sent without one) with backoff while the
    /// server is away, and at once when the client has reconnected since
    /// sending it (the acknowledgement owed on the old connection never
    /// comes; waiting out its 5 s timeout stalled a consumer that answers
    /// what it handles). Gives up only when `stop` is raised.
    pub(crate) async fn confirm(
        &self,
        mut publish: InFlight,
        stop: &StopSignal,
    ) -> Result<(), NatsError> {
        let mut wait = Duration::from_millis(50);
        loop {
            // Err(None): the client reconnected before the acknowledgement.
            let outcome: Result<(), Option<String>> = match publish.ack.take() {
                Some(ack) => tokio::select! {
                    biased;
                    result = ack => result.map(|_| ()).map_err(|e| Some(e.to_string())),
                    () = self.reconnections.since(publish.sent_on) => Err(None),
                },
                None => Err(Some("not sent".to_string())),
            };
            let failure = match outcome {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if stop.is_stopped() {
                return Err(NatsError::Publish {
                    subject: publish.subject,
                    reason: failure
                        .unwrap_or_else(|| "reconnected before the acknowledgement".into()),
                });
            }
            match failure {
                None => {
                    tracing::info!(subject = %publish.subject, message_id = %publish.id, "JetStream publish sent before a reconnection; sending it again");
                }
                Some(reason) => {
                    tracing::warn!(subject = %publish.subject, message_id = %publish.id, %reason, retry_in = ?wait, "JetStream publish not acknowledged; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
            self.send(&mut publish).await;
        }
    }

    /// Messages the family streams still hold: with interest retention,
    /// those some consumer has not acknowledged yet (zero: every durable
    /// consumer has caught up).
    pub async fn unacknowledged(&self) -> Result<u64, NatsError> {
        let mut total = 0;
        for family in &self.settings.families {
            let name = stream_name(&self.prefix, family);
            let failed = |e: String| NatsError::JetStream {
                what: format!("stream {name}"),
                reason: e,
            };
            let mut stream = self
                .context
                .get_stream(&name)
                .await
                .map_err(|e| failed(e.to_string()))?;
            total += stream
                .info()
                .await
                .map_err(|e| failed(e.to_string()))?
                .state
                .messages;
        }
        Ok(total)
    }

    /// The durable consumer `name` on the stream of `family`, reading
    /// `filter` (created if missing).
    pub(crate) async fn consumer(
        &self,
        family: &str,
        name: &str,
        filter: &str,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, NatsError> {
        let failed = |e: String| NatsError::JetStream {
            what: format!("consumer {name}"),
            reason: e,
        };
        let stream = self
            .context
            .get_stream(stream_name(&self.prefix, family))
            .await
            .map_err(|e| failed(e.to_string()))?;
        // The server refuses a backoff list unless max_deliver exceeds its
        // length; the first entry also replaces ack_wait for the first
        // redelivery, so backoff here only governs naks (sent by us).
        let config = consumer::pull::Config {
            durable_name: Some(name.to_string()),
            filter_subject: filter.to_string(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            max_deliver: self.settings.max_deliver,
            max_ack_pending: self.settings.max_ack_pending,
            ..Default::default()
        };
        stream
            .get_or_create_consumer(name, config)
            .await
            .map_err(|e| failed(e.to_string()))
    }
}

/// How long [`Reliable::open`] keeps asking a server that answers late.
const STREAM_READY_LIMIT: Duration = Duration::from_secs(20);

/// Makes sure `family`'s stream under `prefix` exists with our mark.
async fn ensure_stream(
    context: &jetstream::Context,
    prefix: &str,
    family: &str,
    settings: &JetStreamSettings,
) -> Result<(), NatsError> {
    let name = stream_name(prefix, family);
    let failed = |e: String| NatsError::JetStream {
        what: format!("stream {name}"),
        reason: e,
    };
    if let Some(existing) = existing_stream(context, &name).await? {
        if !is_ours(&existing, prefix, family) {
            return Err(foreign(&name, prefix, family, &existing));
        }
        return Ok(());
    }
    let config = stream::Config {
        name: name.clone(),
        description: Some(format!("Bistoury: the {family} messages under {prefix}")),
        subjects: vec![mark(prefix, family)],
        retention: stream::RetentionPolicy::Interest,
        storage: stream::StorageType::File,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas.max(1),
        metadata: [(MARK_KEY.to_string(), mark(prefix, family))].into(),
        ..Default::default()
    };
    if let Err(error) = context.create_stream(config).await {
        // Agents start together: another one may have created the
        // stream between this one's look and its create (the server
        // then refuses the second create). The stream being there
        // now, with our mark, is what counts.
        match existing_stream(context, &name).await? {
            Some(existing) if is_ours(&existing, prefix, family) => {}
            Some(existing) => return Err(foreign(&name, prefix, family, &existing)),
            None => return Err(failed(error.to_string())),
        }
    }
    Ok(())
}

/// The configuration of the stream `name`, or `None` when there is none.
async fn existing_stream(
    context: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Config>, NatsError> {
    let failed = |reason: String| NatsError::JetStream {
        what: format!("stream {name}"),
        reason,
    };
    match context.get_stream(name).await {
        Ok(mut stream) => match stream.info().await {
            Ok(info) => Ok(Some(info.config.clone())),
            Err(e) => Err(failed(e.to_string())),
        },
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(failed(e.to_string())),
    }
}

/// What an agent subscribing to `nats_subject` (under `prefix`) needs: a
/// core subscription, durable consumers on JetStream families, or both
/// (a wildcard in the family position spans both kinds).
pub(crate) struct Plan {
    /// Subscribe on core NATS (messages of JetStream families that arrive
    /// here are skipped: their consumers deliver them).
    pub core: Option<String>,
    /// (family, filter subject) pairs to read through durable consumers.
    pub durable: Vec<(String, String)>,
}

pub(crate) fn plan(settings: Option<&JetStreamSettings>, prefix: &str, nats_subject: &str) -> Plan {
    let Some(settings) = settings else {
        return Plan {
            core: Some(nats_subject.to_string()),
            durable: Vec::new(),
        };
    };
    let rest = nats_subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(nats_subject);
    let (family, tail) = match rest.split_once('.') {
        Some((family, tail)) => (family, Some(tail)),
        None => (rest, None),
    };
    match family {
        "*" | ">" => {
            let durable = settings
                .families
                .iter()
                .map(|f| {
                    let filter = match (family, tail) {
                        (">", _) => format!("{prefix}.{f}.>"),
                        (_, Some(tail)) => format!("{prefix}.{f}.{tail}"),
                        (_, None) => format!("{prefix}.{f}"),
                    };
                    (f.clone(), filter)
                })
                .collect();
            Plan {
                core: Some(nats_subject.to_string()),
                durable,
            }
        }
        family if settings.families.iter().any(|f| f == family) => Plan {
            core: None,
            durable: vec![(family.to_string(), nats_subject.to_string())],
        },
        _ => Plan {
            core: Some(nats_subject.to_string()),
            durable: Vec::new(),
        },
    }
}

/// What a JetStream user must know about a server that reports `version`
/// (`2.9.10`, `2.12.8-beta`...), if anything: before 2.10, a server
/// restarted after a crash drops messages still waiting in an
/// interest-retention stream for one consumer once another consumer of the
/// stream has acknowledged past them (observed with 2.9.10: 999 of 1,000
/// waiting messages gone; 2.10.25 and 2.12.8 keep them all; test
/// `a_server_killed_while_messages_wait_for_a_stopped_agent_keeps_them`).
/// `None` for 2.10 and later, and for a version it cannot read.
pub fn server_warning(version: &str) -> Option<String> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    ((major, minor) < (2, 10)).then(|| {
        format!(
            "nats-server {version} drops messages still waiting in JetStream streams when it \
             is restarted after a crash; use nats-server 2.10 or newer"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> JetStreamSettings {
        JetStreamSettings {
            families: vec!["data".into(), "trade".into()],
            ..Default::default()
        }
    }

    #[test]
    fn families_choose_core_or_durable() {
        let s = settings();
        assert!(s.carries("data.candle.BTC.1m"));
        assert!(!s.carries("signal.aggregated"));
        let p = plan(Some(&s), "bx", "bx.data.candle.>");
        assert!(p.core.is_none());
        assert_eq!(p.durable, vec![("data".into(), "bx.data.candle.>".into())]);
        let p = plan(Some(&s), "bx", "bx.signal.aggregated");
        assert_eq!(p.core.as_deref(), Some("bx.signal.aggregated"));
        assert!(p.durable.is_empty());
        let p = plan(Some(&s), "bx", "bx.*.fill");
        assert_eq!(p.core.as_deref(), Some("bx.*.fill"));
        assert_eq!(
            p.durable,
            vec![
                ("data".into(), "bx.data.fill".into()),
                ("trade".into(), "bx.trade.fill".into())
            ]
        );
        let p = plan(Some(&s), "bx", "bx.>");
        assert_eq!(p.durable[1], ("trade".into(), "bx.trade.>".into()));
        let p = plan(None, "bx", "bx.data.candle.>");
        assert_eq!(p.core.as_deref(), Some("bx.data.candle.>"));
    }

    #[test]
    fn servers_before_2_10_are_warned_about() {
        assert!(server_warning("2.9.10").unwrap().contains("2.9.10"));
        assert!(server_warning("v2.2.0-beta.46").is_some());
        assert!(server_warning("1.4.1").is_some());
        assert_eq!(server_warning("2.10.0"), None);
        assert_eq!(server_warning("2.12.8"), None);
        assert_eq!(server_warning("3.0.0-rc.1"), None);
        assert_eq!(server_warning("unknown"), None);
        assert_eq!(server_warning(""), None);
    }

    #[test]
    fn names_are_what_jetstream_accepts() {
        assert_eq!(stream_name("bistoury", "data"), "BISTOURY_DATA");
        assert_eq!(stream_name("a.b", "trade"), "A_B_TRADE");
        assert_eq!(
            consumer_name("signals", "bistoury.data.candle.>"),
            "signals_bistoury_data_candle_G"
        );
        assert_eq!(consumer_name("x", "p.*.y"), "x_p_S_y");
    }

    #[test]
    fn redelivery_waits_follow_the_backoff_list() {
        let s = settings();
        assert_eq!(s.redelivery_delay(1), Duration::from_millis(100));
        assert_eq!(s.redelivery_delay(2), Duration::from_secs(1));
        assert_eq!(s.redelivery_delay(9), Duration::from_secs(1));
        let none = JetStreamSettings {
            backoff: vec![],
            ..settings()
        };
        assert_eq!(none.redelivery_delay(3), none.ack_wait);
    }
}
