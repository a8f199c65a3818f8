//! A `metrics` recorder for tests: it keeps every series it is given, with its labels, and
//! every description, and reads them without resetting anything (metrics-util's
//! `DebuggingRecorder` resets counters and gauges at each snapshot, and brings a dozen crates
//! into the build for it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// A series: its name and its labels, sorted by key.
type Id = (String, Vec<(String, String)>);

/// The samples of a histogram.
#[derive(Debug, Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

#[derive(Debug, Default)]
struct Series {
    counters: BTreeMap<Id, Arc<AtomicU64>>,
    gauges: BTreeMap<Id, Arc<AtomicU64>>,
    histograms: BTreeMap<Id, Arc<Samples>>,
    /// By name: (kind, unit, description).
    described: BTreeMap<String, (&'static str, Option<Unit>, String)>,
}

/// The recorder; install it for a test with `metrics::set_default_local_recorder`.
#[derive(Debug, Default)]
pub struct TestRecorder(Mutex<Series>);

fn id(key: &Key) -> Id {
    let mut labels: Vec<_> = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    labels.sort();
    (key.name().to_owned(), labels)
}

fn id_of(name: &str, labels: &[(&str, &str)]) -> Id {
    let mut labels: Vec<_> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

impl TestRecorder {
    /// A counter's value; `None` if it was never registered.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let series = self.0.lock().unwrap();
        let counter = series.counters.get(&id_of(name, labels))?;
        Some(counter.load(Ordering::SeqCst))
    }

    /// A gauge's value; `None` if it was never registered.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let series = self.0.lock().unwrap();
        let gauge = series.gauges.get(&id_of(name, labels))?;
        Some(f64::from_bits(gauge.load(Ordering::SeqCst)))
    }

    /// A histogram's samples (empty if it was never registered).
    pub fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let series = self.0.lock().unwrap();
        series
            .histograms
            .get(&id_of(name, labels))
            .map(|h| h.0.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Every series registered, as `name{key=value,...}`, sorted.
    pub fn series(&self) -> Vec<String> {
        let series = self.0.lock().unwrap();
        let ids = (series.counters.keys())
            .chain(series.gauges.keys())
            .chain(series.histograms.keys());
        let mut all: Vec<String> = ids
            .map(|(name, labels)| {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{name}{{{}}}", labels.join(","))
            })
            .collect();
        all.sort();
        all
    }

    /// What was described: name → (kind, unit, description).
    pub fn described(&self) -> BTreeMap<String, (&'static str, Option<Unit>, String)> {
        self.0.lock().unwrap().described.clone()
    }

    fn describe(&self, kind: &'static str, key: &KeyName, unit: Option<Unit>, text: &str) {
        let mut series = self.0.lock().unwrap();
        let entry = (kind, unit, text.to_owned());
        series.described.insert(key.as_str().to_owned(), entry);
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe("counter", &key, unit, &description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe("gauge", &key, unit, &description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe("histogram", &key, unit, &description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut series = self.0.lock().unwrap();
        Counter::from_arc(Arc::clone(series.counters.entry(id(key)).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut series = self.0.lock().unwrap();
        Gauge::from_arc(Arc::clone(series.gauges.entry(id(key)).or_default()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut series = self.0.lock().unwrap();
        Histogram::from_arc(Arc::clone(series.histograms.entry(id(key)).or_default()))
    }
}
