//! In-process cost of one Deployment CREATE decision through
//! `admission::handle`: parse the AdmissionReview, look the workload up in the
//! store, plan the sidecar, serialize the answer with its base64 patch; and
//! of the parsing alone (`decision/parse_review`), so that the decision
//! beside parsing is the difference.
//!
//! Also what every answered review costs besides: its metrics (`metrics/`)
//! and its log line (`log/`).
//!
//! `cargo bench --bench decision` (criterion prints the median estimate).

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use stash::admission::{Endpoint, handle};
use stash::api::{BackupConfiguration, BackupConfigurationSpec, BackupTarget, TargetRef};
use stash::settings::Settings;
use stash::store::offline;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(root.join("tests/fixtures/reviews/workloads/deployment-create.json"))
        .expect("fixture");
    let loaded = offline::load(&root.join("tests/fixtures/store/default")).expect("store");
    let settings = Settings::default();
    let snap = loaded.snapshot;
    // The decision must be the real one: an injection.
    let answer = handle(Endpoint::MutateWorkloads, &body, &snap, &settings).expect("answer");
    assert!(answer.patch_ops > 0);

    let mut group = c.benchmark_group("decision");
    group.measurement_time(Duration::from_secs(5));
    // Parsing alone (the envelope, the request's fields, the object's name):
    // what the decision costs beside parsing is the difference.
    group.bench_function("parse_review", |b| {
        b.iter(|| stash::admission::wire::parse(std::hint::black_box(&body)).map(|(_, r)| r.uid))
    });
    group.bench_function("deployment_create_inject", |b| {
        b.iter(|| {
            handle(
                Endpoint::MutateWorkloads,
                std::hint::black_box(&body),
                &snap,
                &settings,
            )
        })
    });

    // Same decision with 10 000 other configurations in the store: lookups
    // are by target, so the cost must not grow with the store.
    let mut big = snap.clone();
    for i in 0..10_000 {
        let mut bc = BackupConfiguration::new(
            &format!("other-{i}"),
            BackupConfigurationSpec {
                target: Some(BackupTarget {
                    target_ref: TargetRef {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: format!("app-{i}"),
                    },
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        bc.metadata.namespace = Some(format!("ns-{}", i % 100));
        big.upsert_config(bc);
    }
    group.bench_function("deployment_create_inject_10k_configs", |b| {
        b.iter(|| {
            handle(
                Endpoint::MutateWorkloads,
                std::hint::black_box(&body),
                &big,
                &settings,
            )
        })
    });
    group.finish();

    // What every answered review costs besides the decision: its histogram
    // observation and its response count (label sets of static strings, no
    // allocation).
    let metrics = stash::server::metrics::Metrics::new();
    let mut group = c.benchmark_group("metrics");
    group.bench_function("observe_admission_and_count_response", |b| {
        b.iter(|| {
            metrics.observe_admission(
                Endpoint::MutateWorkloads,
                std::hint::black_box("Deployment"),
                "CREATE",
                true,
                true,
                Duration::from_micros(250),
            );
            metrics.count_response(std::hint::black_box(200));
        })
    });
    group.finish();

    // The admission log line, in the default text format, into the server's
    // background log buffer (its writer thread empties it to stderr: run
    // with 2>/dev/null). Last: it installs the process's subscriber.
    stash::telemetry::init(stash::telemetry::LogFormat::Text);
    let _writer = stash::telemetry::background();
    let mut group = c.benchmark_group("log");
    let line = || {
        stash::server::http::log_admission(
            Endpoint::MutateWorkloads,
            std::hint::black_box(&answer),
            Duration::from_micros(250),
        )
    };
    group.bench_function("admission_line_text", |b| b.iter(line));
    // The install's format, through the same buffer.
    let json = stash::telemetry::dispatch(stash::telemetry::LogFormat::Json);
    tracing::dispatcher::with_default(&json, || {
        group.bench_function("admission_line_json", |b| b.iter(line))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
