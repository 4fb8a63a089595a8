//! Memory of one decision, counted by a global allocator: a review costs a
//! scan of its body, not a tree of it (issue 11). Deterministic: bytes
//! allocated, not resident memory or time (the load bench gives those).

use stash_testkit::{alloc, big};

use serde_json::Value;
use stash::admission::{self, Endpoint};
use stash::settings::Settings;
use stash::store::Snapshot;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// The most bytes allocated at once while `f` runs, above what was live before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = alloc::current();
    alloc::reset_peak();
    let out = f();
    (out, alloc::peak().saturating_sub(base))
}

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples")
}

fn example_deployment() -> Value {
    use serde::Deserialize;
    let text = std::fs::read_to_string(examples().join("deployment.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == "Deployment")
        .unwrap()
}

fn decide(body: &[u8], snap: &Snapshot, settings: &Settings) -> (Value, usize) {
    let (answer, peak) =
        peak_during(|| admission::handle(Endpoint::MutateWorkloads, body, snap, settings));
    let answer = answer.expect("an AdmissionReview");
    (serde_json::from_slice(&answer.body).unwrap(), peak)
}

// One test: the counter is process-wide, so nothing may run beside it.
#[test]
fn a_decision_allocates_a_fraction_of_its_body() {
    let snap = stash::store::offline::load(&examples()).unwrap().snapshot;
    let settings = Settings::default();
    let deployment = example_deployment();
    let small = serde_json::to_vec(&big::review("small", &deployment, None)).unwrap();
    let (small_answer, small_peak) = decide(&small, &snap, &settings);
    assert!(
        small_answer["response"]["patch"].is_string(),
        "{small_answer}"
    );

    // A 3 MB UPDATE (object and oldObject each just under etcd's limit):
    // the same sidecar patch as the small Deployment's, for what the small
    // review costs: the workload is read from the text, not built (the old
    // full parse allocated tens of times the body).
    let update = big::large_update(&deployment);
    assert!(
        update.len() > 2 * big::ETCD_LIMIT - 16 * 1024,
        "{}",
        update.len()
    );
    let (answer, peak) = decide(&update, &snap, &settings);
    eprintln!("{}-byte UPDATE: {peak} bytes at peak", update.len());
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"]["patch"].is_string(), "{answer}");
    assert!(
        peak <= small_peak + 64 * 1024,
        "{peak} bytes allocated deciding a {}-byte UPDATE",
        update.len()
    );

    // 7 MiB of `[{"a":0}, …]` inside spec: scanned, never built.
    let junk = big::junk_create(&deployment, 7 * 1024 * 1024 - 1024);
    let (answer, peak) = decide(&junk, &snap, &settings);
    eprintln!(
        "{}-byte junk CREATE: {peak} bytes at peak (small review: {small_peak})",
        junk.len()
    );
    assert_eq!(
        answer["response"]["patch"],
        small_answer["response"]["patch"]
    );
    assert!(
        peak <= small_peak + 64 * 1024,
        "{peak} bytes allocated deciding a {}-byte review (small one: {small_peak})",
        junk.len()
    );

    // A body refused as not admission.k8s.io/v1 costs no tree either.
    let beta = String::from_utf8(junk).unwrap().replacen(
        "admission.k8s.io/v1",
        "admission.k8s.io/v1beta1",
        1,
    );
    let (refused, peak) = peak_during(|| {
        admission::handle(Endpoint::MutateWorkloads, beta.as_bytes(), &snap, &settings)
    });
    assert!(refused.is_err());
    assert!(
        peak <= 64 * 1024,
        "{peak} bytes allocated refusing a 7 MiB body"
    );
}
