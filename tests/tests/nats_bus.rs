//! Core NATS through `NatsBus`, against a real `nats-server` started here:
//! what it publishes arrives whole and in order, in either wire format.

use std::time::Duration;

use bus_core::driver::StopSignal;
use bus_core::message::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::message::WireFormat;
use bus_core::nats::{NatsBus, NatsSettings};
use bus_core::{AgentId, Envelope, Payload, Topic};
use futures_util::StreamExt;
use rust_decimal::Decimal;

mod support;
use support::NatsServer;

fn price(n: i64) -> Envelope {
    let symbol = ["BTC", "ETH"][n as usize % 2];
    let payload = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new(symbol).unwrap(),
        price: Decimal::new(6_512_345 + n, 2),
        timestamp_ms: n,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("feed"),
        Topic::new(format!("data.price.{symbol}")).unwrap(),
        Payload::DataPriceUpdate(payload),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publications_arrive_whole_and_in_order_in_either_format() {
    let server = NatsServer::start();
    let stop = StopSignal::new();
    for format in [WireFormat::Json, WireFormat::Binary] {
        let settings = NatsSettings {
            url: server.url(),
            prefix: "many".into(),
            token: None,
            when_disconnected: Default::default(),
            wire_format: format,
            jetstream: None,
        };
        let bus = NatsBus::connect(&settings).await.unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let mut arrivals = client.subscribe("many.data.>").await.unwrap();
        client.flush().await.unwrap();
        // Several blocks of the publisher's encode buffer (64 KiB) worth,
        // on two topics, one at a time and in batches.
        let sent: Vec<Envelope> = (0..3000).map(price).collect();
        let (singly, batched) = sent.split_at(1000);
        for envelope in singly {
            bus.publish(envelope, &stop).await.unwrap();
        }
        for batch in batched.chunks(7) {
            bus.publish_many(batch, &stop).await.unwrap();
        }
        bus.client().flush().await.unwrap();
        for expected in &sent {
            let message = tokio::time::timeout(Duration::from_secs(10), arrivals.next())
                .await
                .expect("every publication arrives")
                .unwrap();
            assert_eq!(message.subject.as_str(), format!("many.{}", expected.topic));
            assert_eq!(
                format == WireFormat::Binary,
                bus_core::message::binary::is_binary(&message.payload)
            );
            let decoded = Envelope::from_wire(&message.payload).unwrap();
            assert_eq!(&decoded, expected, "{format:?}");
        }
    }
}
