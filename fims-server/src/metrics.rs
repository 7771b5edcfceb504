//! `fims_server --metrics-listen ADDR:PORT`: the broker's counters for
//! Prometheus (fims-server/README.md, "Metrics").
//!
//! The broker's loop never waits for the exporter: when metrics are on, it
//! stores its counters into [`Published`] (relaxed atomic stores, a few dozen
//! per loop turn) and the exporter thread (`metrics-http`) reads them at a
//! scrape. Two counters read at one scrape may be a turn apart; each is exact.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::stats::{Stats, FIELDS, METHODS};

/// The broker's counters as the loop last published them.
#[derive(Debug)]
pub struct Published {
    fields: [AtomicU64; FIELDS],
}

impl Default for Published {
    fn default() -> Published {
        Published {
            fields: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Published {
    /// Publishes `s` (the loop, once per turn).
    pub fn store(&self, s: &Stats) {
        for (a, v) in self.fields.iter().zip(s.fields()) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// What was last published (the exporter).
    pub fn load(&self) -> Stats {
        Stats::from_fields(std::array::from_fn(|i| {
            self.fields[i].load(Ordering::Relaxed)
        }))
    }
}

/// The registry of one scrape, from `s`.
pub fn registry(s: Stats) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Counters(s)));
    r
}

#[derive(Debug)]
struct Counters(Stats);

/// A metric with one series per `(label value, value)`.
fn labelled<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    (name, help, label): (&str, &str, &str),
    series: &[(&str, M)],
) -> Result<(), std::fmt::Error> {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let mut m = enc.encode_descriptor(name, help, None, first.metric_type())?;
    for (v, metric) in series {
        metric.encode(m.encode_family(&[(label, *v)])?)?;
    }
    Ok(())
}

/// A metric with one series and no labels.
fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    (name, help, unit): (&str, &str, Option<&Unit>),
    value: M,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, unit, value.metric_type())?;
    value.encode(m)
}

/// The gauges: (name without unit, help, unit, value).
type Gauges<'a> = [(&'a str, &'a str, Option<&'a Unit>, u64)];
/// The counters without labels: (name without `_total`, help, value).
type Counts<'a> = [(&'a str, &'a str, u64)];

impl Counters {
    fn gauges(&self) -> [(&'static str, &'static str, Option<&'static Unit>, u64); 4] {
        let s = &self.0;
        [
            (
                "fims_connections",
                "Open connections (handshaken or not).",
                None,
                s.connections,
            ),
            (
                "fims_subscriptions",
                "Subscriptions held by all connections.",
                None,
                s.subscriptions,
            ),
            (
                "fims_queued",
                "Bytes queued for slow receivers, as counted against --max-queued-bytes.",
                Some(&Unit::Bytes),
                s.queued_bytes,
            ),
            (
                "fims_queued_peak",
                "The most bytes ever queued for slow receivers.",
                Some(&Unit::Bytes),
                s.peak_queued_bytes,
            ),
        ]
    }

    fn counts(&self) -> [(&'static str, &'static str, u64); 6] {
        let s = &self.0;
        [
            (
                "fims_messages_routed",
                "Data messages routed (delivered to zero or more receivers).",
                s.routed,
            ),
            (
                "fims_messages_unrouted",
                "Data messages no connection subscribed to.",
                s.unrouted,
            ),
            (
                "fims_deliveries",
                "Copies handed to receivers (sent or queued).",
                s.delivered,
            ),
            (
                "fims_connections_accepted",
                "Connections accepted.",
                s.accepted,
            ),
            (
                "fims_subscribes_refused",
                "sub requests answered FAILURE.",
                s.sub_refused,
            ),
            (
                "fims_accept_stalls",
                "Episodes of accept failing for want of descriptors.",
                s.accept_stalls,
            ),
        ]
    }
}

fn gauges(e: &mut DescriptorEncoder, list: &Gauges<'_>) -> Result<(), std::fmt::Error> {
    for &(name, help, unit, v) in list {
        single(e, (name, help, unit), ConstGauge::new(v))?;
    }
    Ok(())
}

fn counts(e: &mut DescriptorEncoder, list: &Counts<'_>) -> Result<(), std::fmt::Error> {
    for &(name, help, v) in list {
        single(e, (name, help, None), ConstCounter::new(v))?;
    }
    Ok(())
}

impl Collector for Counters {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let e = &mut enc;
        let c = ConstCounter::new;
        gauges(e, &self.gauges())?;
        let methods: Vec<(&str, ConstCounter)> = METHODS
            .iter()
            .zip(s.by_method)
            .map(|(m, n)| (m.as_str(), c(n)))
            .collect();
        let help = "Well-formed messages received, by method (sub included).";
        labelled(e, ("fims_messages", help, "method"), &methods)?;
        let help = "Messages or deliveries dropped, by reason (malformed, unknown_method, oversize: the datagram; queue_full, shed, send_error: one receiver's copy).";
        let dropped = [
            ("malformed", c(s.malformed)),
            ("unknown_method", c(s.unknown_method)),
            ("oversize", c(s.oversize)),
            ("queue_full", c(s.overflow)),
            ("shed", c(s.shed)),
            ("send_error", c(s.send_errors)),
        ];
        labelled(e, ("fims_messages_dropped", help, "reason"), &dropped)?;
        counts(e, &self.counts())?;
        let help = "Connections closed before or at the handshake, by reason.";
        let refused = [
            ("bad_handshake", c(s.bad_handshakes)),
            ("handshake_timeout", c(s.handshake_timeouts)),
            ("uid_limit", c(s.uid_refused)),
        ];
        labelled(e, ("fims_connections_refused", help, "reason"), &refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_round_trip_and_names() {
        let p = Published::default();
        let mut s = Stats {
            connections: 3,
            overflow: 2,
            ..Stats::default()
        };
        s.by_method[0] = 10;
        p.store(&s);
        assert_eq!(p.load(), s);
        let text =
            metrics_http::encode(&registry(p.load()), metrics_http::Format::Prometheus).unwrap();
        assert!(text.contains("\nfims_connections 3\n"), "{text}");
        assert!(
            text.contains("fims_messages_total{method=\"set\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("fims_messages_dropped_total{reason=\"queue_full\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE fims_subscriptions gauge\n"), "{text}");
        assert!(text.contains("# TYPE fims_queued_bytes gauge\n"), "{text}");
    }
}
