//! Helpers shared by the admission and review tests: fixtures in, decoded
//! answers out, exactly as the API server would read them.

use std::path::PathBuf;

use base64::Engine;
use serde_json::Value;
use stash::admission::{self, Endpoint};
use stash::settings::{PausedSessionPolicy, Settings};
use stash::store::{Snapshot, offline};

pub fn fixtures() -> PathBuf {
    crate::repo_root().join("tests/fixtures")
}

/// The store of `tests/fixtures/store/<name>`; any problem loading it fails the test.
pub fn store(name: &str) -> Snapshot {
    let loaded = offline::load(&fixtures().join("store").join(name)).expect("store dir");
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.snapshot
}

pub fn review(path: &str) -> Value {
    let file = fixtures().join("reviews").join(format!("{path}.json"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub fn settings(policy: PausedSessionPolicy) -> Settings {
    Settings {
        paused_session_policy: policy,
        ..Settings::default()
    }
}

/// A decoded response, as the API server reads it.
#[derive(Debug)]
pub struct Response {
    pub raw: Value,
    pub allowed: bool,
    pub message: Option<String>,
    pub warnings: Vec<String>,
    /// The decoded JSON patch, empty when none was sent.
    pub patch: Vec<json_patch::PatchOperation>,
}

impl Response {
    /// The single denial message; asserts it is one line.
    pub fn denial(&self) -> &str {
        assert!(!self.allowed, "expected a denial: {:?}", self.raw);
        let m = self.message.as_deref().expect("a denial has a message");
        assert!(!m.contains('\n'), "denial is more than one line: {m}");
        m
    }

    pub fn assert_untouched(&self) {
        assert!(self.allowed, "{:?}", self.raw);
        assert!(self.patch.is_empty(), "unexpected patch {:?}", self.patch);
        assert!(self.raw["response"].get("patchType").is_none());
    }
}

/// Sends `review` to `endpoint` and decodes the answer the way the API server does.
pub fn ask_value(
    endpoint: Endpoint,
    review: &Value,
    snap: &Snapshot,
    settings: &Settings,
) -> Response {
    let body = serde_json::to_vec(review).unwrap();
    let answer =
        admission::handle(endpoint, &body, snap, settings).expect("a valid AdmissionReview");
    let raw: Value = serde_json::from_slice(&answer.body).unwrap();
    let resp = &raw["response"];
    assert_eq!(raw["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(raw["kind"], "AdmissionReview");
    assert_eq!(resp["uid"], review["request"]["uid"], "uid is echoed");
    let patch = match resp.get("patch") {
        Some(Value::String(b64)) => {
            assert_eq!(resp["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
        None => Vec::new(),
        Some(other) => panic!("patch must be a base64 string, got {other}"),
    };
    Response {
        allowed: resp["allowed"].as_bool().unwrap(),
        message: resp
            .pointer("/status/message")
            .and_then(Value::as_str)
            .map(String::from),
        warnings: resp
            .get("warnings")
            .and_then(Value::as_array)
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
        patch,
        raw,
    }
}

pub fn ask(endpoint: Endpoint, fixture: &str, store_name: &str) -> Response {
    ask_value(
        endpoint,
        &review(fixture),
        &store(store_name),
        &settings(PausedSessionPolicy::Skip),
    )
}

/// The request's object with the response's patch applied.
pub fn patched(review: &Value, resp: &Response) -> Value {
    let mut obj = review["request"]["object"].clone();
    json_patch::patch(&mut obj, &resp.patch).expect("the patch applies to the request's object");
    obj
}

/// `review` re-sent as an UPDATE of `object` (what the API server sends on the next apply).
pub fn as_update(review: &Value, object: &Value) -> Value {
    let mut r = review.clone();
    r["request"]["operation"] = "UPDATE".into();
    r["request"]["oldObject"] = object.clone();
    r["request"]["object"] = object.clone();
    r["request"]["uid"] = "0c5a3d1e-0000-4000-8000-000000000001".into();
    r["request"]["options"]["kind"] = "UpdateOptions".into();
    r
}

pub fn container<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.pointer("/spec/template/spec/containers")?
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

pub fn volume<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.pointer("/spec/template/spec/volumes")?
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

pub fn args(c: &Value) -> Vec<&str> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}
