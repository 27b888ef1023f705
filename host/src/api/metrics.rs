//! `GET /metrics`: the projections' counters and gauges in the Prometheus / OpenMetrics
//! text format, through `prometheus-client`, labelled `projection="…"`.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::status::ProjectionStatus;
use crate::store::ProjectionState;

type Labels = Vec<(String, String)>;

/// Sum, count, and (upper bound, count) per bucket.
type Buckets = (f64, u64, Vec<(f64, u64)>);

/// A histogram whose buckets were counted elsewhere (by the runner), set at scrape time.
#[derive(Debug, Default)]
struct Counted(Mutex<Buckets>);

impl TypedMetric for Counted {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Counted {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        encoder.encode_histogram::<NoLabelSet>(h.0, h.1, &h.2, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Render every projection's metrics.
pub fn render(list: &[ProjectionStatus]) -> String {
    let mut registry = Registry::with_prefix("projector");
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(name, help, family.clone());
        family
    };
    let events = gauge(
        &mut registry,
        "events_handled",
        "Events that went into the module in this run",
    );
    let read = gauge(
        &mut registry,
        "events_read",
        "Events read from the source, matched or not",
    );
    let ops = gauge(
        &mut registry,
        "ops_written",
        "Ops written to the read model",
    );
    let failed = gauge(
        &mut registry,
        "events_failed",
        "Events skipped or dead-lettered",
    );
    let dead = gauge(&mut registry, "dead_letters", "Dead letters waiting");
    let lag = gauge(
        &mut registry,
        "lag_events",
        "Events between the checkpoint and the source head",
    );
    let rate = gauge(
        &mut registry,
        "events_per_second",
        "Recent events per second",
    );
    let position = gauge(
        &mut registry,
        "position",
        "Commit position of the last event applied",
    );
    let state = gauge(
        &mut registry,
        "state",
        "1 for the projection's current state",
    );
    let fuel = gauge(&mut registry, "fuel_used", "Fuel its module used");
    let memory = gauge(
        &mut registry,
        "peak_memory_bytes",
        "Largest memory an instance grew to",
    );
    let lag_s = gauge(
        &mut registry,
        "lag_seconds",
        "Age of the last event applied while catching up",
    );
    let batches = Family::<Labels, Counted>::default();
    registry.register(
        "batch_duration_seconds",
        "Read, call and apply time per batch",
        batches.clone(),
    );
    for p in list {
        let l = vec![("projection".to_string(), p.name.clone())];
        events.get_or_create(&l).set(p.events_handled as f64);
        read.get_or_create(&l).set(p.events_read as f64);
        ops.get_or_create(&l).set(p.ops_written as f64);
        failed.get_or_create(&l).set(p.events_failed as f64);
        dead.get_or_create(&l).set(p.dead_letters as f64);
        lag.get_or_create(&l).set(p.lag_events as f64);
        rate.get_or_create(&l).set(p.events_per_second);
        position.get_or_create(&l).set(p.position as f64);
        fuel.get_or_create(&l).set(p.fuel_used as f64);
        memory.get_or_create(&l).set(p.peak_memory_bytes as f64);
        lag_s.get_or_create(&l).set(p.lag_seconds);
        if let Some(h) = &p.batch_seconds {
            let buckets: Vec<(f64, u64)> = h
                .le_ms
                .iter()
                .map(|&ms| ms as f64 / 1000.0)
                .chain([f64::INFINITY])
                .zip(h.counts.iter().copied())
                .collect();
            let count = h.counts.iter().sum();
            *batches
                .get_or_create(&l)
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = (h.sum, count, buckets);
        }
        for s in ProjectionState::ALL {
            let mut l = l.clone();
            l.push(("state".into(), s.as_str().into()));
            state
                .get_or_create(&l)
                .set(if p.state == s.as_str() { 1.0 } else { 0.0 });
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
