//! An agent of your own on NATS, beside a distributed `bistoury run` or
//! any publisher of the documented JSON wire format: it follows the
//! candles under a subject prefix and, every `every` candles of a symbol,
//! publishes its simple moving average as a `data.price_update`.
//!
//! ```text
//! nats-server -p 4222 &
//! cargo run -p orchestrator --example nats_agent -- nats://127.0.0.1:4222 bistoury 20
//! ```
//!
//! Arguments: server URL, subject prefix, `every` (default 20). It prints
//! `subscribed` once its subscription is in place, and stops on Ctrl-C or
//! when its standard input closes.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Read;

use bus_core::agent::supervision::AgentSpec;
use bus_core::model::payload::{Candle, PriceUpdate, PriceUpdateFields};
use bus_core::model::SymbolTopics;
use bus_core::nats::{run_agent, NatsBus, NatsSettings, WhenDisconnected};
use bus_core::prelude::*;
use bus_core::runtime::StopSignal;

/// Publishes each symbol's average close every `every` candles.
struct Averager {
    id: AgentId,
    factory: MessageFactory,
    every: usize,
    closes: BTreeMap<Symbol, Vec<rust_decimal::Decimal>>,
    topics: SymbolTopics,
}

impl Averager {
    fn on_candle(&mut self, candle: &Candle, out: &mut Outbox) -> HandlerResult {
        let closes = self.closes.entry(candle.symbol.clone()).or_default();
        closes.push(candle.close);
        if closes.len() < self.every {
            return Ok(());
        }
        let average = closes.iter().sum::<rust_decimal::Decimal>()
            / rust_decimal::Decimal::from(closes.len());
        closes.clear();
        let update = PriceUpdate::new(PriceUpdateFields {
            symbol: candle.symbol.clone(),
            price: average,
            timestamp_ms: candle.open_time_ms,
        })?;
        let topic = self.topics.topic(&candle.symbol)?;
        out.publish(self.factory.make(
            topic,
            Payload::DataPriceUpdate(update),
            candle.open_time_ms,
        ));
        println!("{} average {average}", candle.symbol);
        Ok(())
    }
}

impl Agent for Averager {
    fn id(&self) -> &AgentId {
        &self.id
    }

    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::from_static("data.candle")]
    }

    fn on_message(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        match envelope.payload() {
            Payload::DataCandle(candle) => self.on_candle(candle, out),
            _ => Ok(()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let prefix = args.next().unwrap_or_else(|| "bistoury".into());
    let every: usize = match args.next() {
        Some(text) => text
            .parse()
            .map_err(|_| format!("every: {text:?} is not a count"))?,
        None => 20,
    };
    let settings = NatsSettings {
        url,
        prefix,
        // A token, if the server wants one, from the environment: never
        // on the command line.
        token: std::env::var("NATS_TOKEN").ok(),
        jetstream: None,
        when_disconnected: WhenDisconnected::Buffer,
        wire_format: Default::default(),
    };
    let bus = NatsBus::connect(&settings).await?;
    let id = AgentId::new("averager");
    let agent = Averager {
        factory: MessageFactory::new(id.clone(), false),
        id,
        every: every.max(1),
        closes: BTreeMap::new(),
        topics: SymbolTopics::new("data.price_update"),
    };
    let stop = StopSignal::new();
    // Stops when standard input closes (its parent went away) or on Ctrl-C.
    let on_eof = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        on_eof.stop();
    });
    let on_interrupt = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.stop();
        }
    });
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if subscribed.await.is_ok() {
            println!("subscribed");
        }
    });
    let (_agent, stats) =
        run_agent(AgentSpec::new(Box::new(agent)), &bus, stop, Some(ready)).await?;
    println!(
        "stopped: {} received, {} published",
        stats.received, stats.published
    );
    Ok(())
}
