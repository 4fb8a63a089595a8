//! admission.k8s.io/v1 on the wire: parsing a review and writing the answer.
//!
//! The answer is our own type rather than kube-core's `AdmissionResponse`,
//! whose `patch` serializes as an array of numbers (kube-rs/kube#1781); the
//! API server requires a base64 string, which a golden test pins.

use kube::core::admission::Operation;
use kube::core::{GroupVersionKind, GroupVersionResource};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::lenient::Text;
use crate::patch::{self, Op};

/// The only AdmissionReview version served.
pub const ADMISSION_V1: &str = "admission.k8s.io/v1";

/// A body that is not an AdmissionReview we can answer, or an answer we could
/// not write. The server maps [`ReviewError::Internal`] to HTTP 500 and every
/// other variant to HTTP 400; `Display` is the one-line reason.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not an AdmissionReview: {0}")]
    NotAdmissionReview(String),
    #[error(
        "unsupported AdmissionReview apiVersion {0:?}: only admission.k8s.io/v1 is served (set admissionReviewVersions: [v1])"
    )]
    UnsupportedVersion(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    /// The decision was made but its answer (or its patch) did not serialize.
    /// serde_json fails only on a map with non-string keys or a failing
    /// `Serialize` impl, neither of which these types have; should it ever
    /// happen, the API server gets an error, never a silent empty answer.
    #[error("internal error: the answer could not be serialized: {0}")]
    Internal(String),
}

impl ReviewError {
    /// Whether the fault is ours (HTTP 500), not the body's (HTTP 400).
    pub fn is_internal(&self) -> bool {
        matches!(self, ReviewError::Internal(_))
    }
}

/// What one rule decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Denial reason (one line), or an informational message when allowed.
    pub message: Option<String>,
    /// JSON patch against the request's object; empty means no patch.
    pub patch: Vec<Op>,
    /// Soft problems, shown by kubectl as `Warning: ...`.
    pub warnings: Vec<String>,
}

impl Decision {
    /// Allowed, untouched.
    pub fn allow() -> Self {
        Self {
            allowed: true,
            ..Self::default()
        }
    }

    /// Denied with a one-line reason.
    pub fn deny(message: impl Into<String>) -> Self {
        Self {
            allowed: false,
            message: Some(message.into()),
            ..Self::default()
        }
    }

    /// Adds a warning.
    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// Sets the patch.
    pub fn with_patch(mut self, patch: Vec<Op>) -> Self {
        self.patch = patch;
        self
    }
}

/// The serialized answer plus what logs and metrics want to know about it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The response AdmissionReview, JSON.
    pub body: Vec<u8>,
    pub uid: String,
    /// Kind of the object under review (`Deployment`).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'static str,
    pub allowed: bool,
    /// Number of patch operations (0: not mutated).
    pub patch_ops: usize,
    /// Size in bytes of the JSON patch before base64.
    pub patch_bytes: usize,
    pub dry_run: bool,
    pub decision: Decision,
}

impl Answer {
    /// Whether a patch was returned.
    pub fn mutated(&self) -> bool {
        self.patch_ops > 0
    }
}

/// The review as the fast path reads it: straight into the typed request,
/// objects kept as raw text.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

/// The review as the checked path reads it: every field optional and of any
/// type, the request kept as raw text, nothing built into a tree.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default, borrow)]
    api_version: Text<'a>,
    #[serde(default, borrow)]
    kind: Text<'a>,
    #[serde(default, borrow)]
    request: Option<&'a RawValue>,
}

/// Parses a request body into its apiVersion and request. No part of the
/// body is built into a JSON tree: the objects stay raw text borrowed from
/// `body`, read later only as far as a decision needs (see [`super::view`]).
pub fn parse(body: &[u8]) -> Result<(String, Request<'_>), ReviewError> {
    // Fast path (every request the API server sends): one pass straight into
    // the typed request. Anything else takes the checked path below, which
    // names what is wrong.
    if let Ok(review) = serde_json::from_slice::<Incoming>(body)
        && review.kind == "AdmissionReview"
        && review.api_version == ADMISSION_V1
        && let Some(req) = review.request
    {
        let req = req.checked()?;
        return Ok((ADMISSION_V1.to_string(), req));
    }
    let object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    let envelope = match serde_json::from_slice::<Envelope>(body) {
        Ok(_) if !object => {
            return Err(ReviewError::NotAdmissionReview(
                "expected a JSON object".into(),
            ));
        }
        Ok(e) => e,
        Err(e) if e.is_data() => {
            return Err(ReviewError::NotAdmissionReview(if object {
                one_line(&e.to_string())
            } else {
                "expected a JSON object".into()
            }));
        }
        Err(e) => return Err(ReviewError::NotJson(one_line(&e.to_string()))),
    };
    match envelope.kind.0.as_deref() {
        Some("AdmissionReview") => {}
        Some(other) => {
            return Err(ReviewError::NotAdmissionReview(format!(
                "kind is {other:?}"
            )));
        }
        None => return Err(ReviewError::NotAdmissionReview("kind is missing".into())),
    }
    let api_version = envelope.api_version.0.as_deref().unwrap_or("");
    if api_version != ADMISSION_V1 {
        return Err(ReviewError::UnsupportedVersion(api_version.to_string()));
    }
    let Some(raw) = envelope.request.filter(|r| r.get() != "null") else {
        return Err(ReviewError::MissingRequest);
    };
    let req: Request = serde_json::from_str(raw.get())
        .map_err(|e| ReviewError::NotAdmissionReview(one_line(&e.to_string())))?;
    Ok((ADMISSION_V1.to_string(), req.checked()?))
}

/// A request's object or oldObject: its raw JSON text (borrowed from the
/// body) and the two metadata fields every decision names it by.
#[derive(Debug)]
pub struct Object<'a> {
    pub raw: &'a RawValue,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl<'a> Object<'a> {
    /// Reads the object's name and namespace; like kube's `DynamicObject`,
    /// an object that is not a JSON object, or whose `metadata`, `name` or
    /// `namespace` has the wrong type, is not a readable review.
    ///
    /// The reading stops at `metadata` (the API server writes it third,
    /// before `spec`): `raw` was already checked to be well-formed JSON when
    /// it was captured, so the rest of it, which is most of it, need not be
    /// scanned again. The stop is an error of ours that carries nothing; the
    /// metadata read before it is kept in [`Found`].
    fn read(raw: &'a RawValue) -> Result<Self, ReviewError> {
        let mut found = None;
        let read = serde::Deserializer::deserialize_map(
            &mut serde_json::Deserializer::from_str(raw.get()),
            Found(&mut found),
        );
        let meta = match (read, found) {
            (_, Some(meta)) => meta,
            (Ok(()), None) => Meta::default(),
            (Err(e), None) => {
                return Err(ReviewError::NotAdmissionReview(one_line(&e.to_string())));
            }
        };
        Ok(Self {
            raw,
            name: meta.name,
            namespace: meta.namespace,
        })
    }
}

#[derive(Default, serde::Deserialize)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// Reads an object's keys up to `metadata`, reads that (a `null` one as
/// empty), and stops.
struct Found<'s>(&'s mut Option<Meta>);

impl<'de> serde::de::Visitor<'de> for Found<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("struct Head")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Text(key)) = map.next_key()? {
            if key.as_deref() == Some("metadata") {
                let meta: Option<Meta> = map.next_value()?;
                *self.0 = Some(meta.unwrap_or_default());
                return Err(serde::de::Error::custom("stop at metadata"));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// An admission request as the decisions read it: the fields of
/// `admission.k8s.io/v1` `AdmissionRequest` stash uses, the objects as raw
/// text. Everything else the API server sends is skipped while scanning.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    /// Required on the wire (as kube-core requires it); not read.
    #[serde(rename = "userInfo")]
    _user_info: IgnoredAny,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default, borrow, rename = "object")]
    object_raw: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "oldObject")]
    old_object_raw: Option<&'a RawValue>,
    #[serde(skip)]
    pub object: Option<Object<'a>>,
    #[serde(skip)]
    pub old_object: Option<Object<'a>>,
}

impl<'a> Request<'a> {
    /// Reads the objects' names; `null` objects are absent.
    fn checked(mut self) -> Result<Self, ReviewError> {
        let read = |raw: Option<&'a RawValue>| {
            raw.filter(|r| r.get() != "null")
                .map(Object::read)
                .transpose()
        };
        self.object = read(self.object_raw.take())?;
        self.old_object = read(self.old_object_raw.take())?;
        Ok(self)
    }
}

/// The spelling of an operation on the wire.
pub fn operation_str(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Serializes the answer to `req`: uid and apiVersion echoed, the patch as a
/// base64 string with `patchType: JSONPatch`.
///
/// Written field by field rather than through serde structs: the patch is
/// base64-encoded straight into the body (its alphabet needs no escaping,
/// which serde would otherwise scan it for), and the body is allocated once
/// at its final size. The golden tests pin the bytes.
pub fn answer(api_version: &str, req: &Request, decision: Decision) -> Answer {
    let patch_json = (!decision.patch.is_empty()).then(|| {
        let mut out = Vec::with_capacity(1024);
        patch::write(&decision.patch, &mut out);
        out
    });
    let patch_bytes = patch_json.as_ref().map_or(0, Vec::len);
    let status = match (&decision.message, decision.allowed) {
        (Some(m), false) => Some((403, Some("Forbidden"), m.as_str())),
        (Some(m), true) => Some((200, None, m.as_str())),
        (None, false) => Some((403, Some("Forbidden"), "denied")),
        (None, true) => None,
    };
    let words: usize = decision.warnings.iter().map(|w| w.len() + 3).sum();
    let message = status.map_or(0, |(_, _, m)| m.len() + 64);
    let mut body = Vec::with_capacity(
        160 + api_version.len() + req.uid.len() + message + words + patch_bytes.div_ceil(3) * 4,
    );
    body.extend_from_slice(br#"{"apiVersion":"#);
    json_str(&mut body, api_version);
    body.extend_from_slice(br#","kind":"AdmissionReview","response":{"uid":"#);
    json_str(&mut body, &req.uid);
    body.extend_from_slice(if decision.allowed {
        br#","allowed":true"#
    } else {
        br#","allowed":false"#
    });
    if let Some((code, reason, message)) = status {
        body.extend_from_slice(br#","status":{"code":"#);
        body.extend_from_slice(if code == 403 { b"403" } else { b"200" });
        if let Some(reason) = reason {
            body.extend_from_slice(br#","reason":"#);
            json_str(&mut body, reason);
        }
        body.extend_from_slice(br#","message":"#);
        json_str(&mut body, message);
        body.push(b'}');
    }
    if let Some(patch) = &patch_json {
        body.extend_from_slice(br#","patch":""#);
        base64_simd::STANDARD.encode_append(patch, &mut body);
        body.extend_from_slice(br#"","patchType":"JSONPatch""#);
    }
    if !decision.warnings.is_empty() {
        body.extend_from_slice(br#","warnings":["#);
        for (i, w) in decision.warnings.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            json_str(&mut body, w);
        }
        body.push(b']');
    }
    body.extend_from_slice(b"}}");
    Answer {
        body,
        uid: req.uid.clone(),
        kind: req.kind.kind.clone(),
        // Empty for a cluster-scoped object: this is what the request said, for
        // the log line, not a namespace to act in.
        namespace: req.namespace.clone().unwrap_or_default(),
        name: req.name.clone(),
        operation: operation_str(&req.operation),
        allowed: decision.allowed,
        patch_ops: decision.patch.len(),
        patch_bytes,
        dry_run: req.dry_run,
        decision,
    }
}

/// Appends `s` as a JSON string (quoted and escaped as serde_json does).
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).unwrap_or(());
}

pub use crate::text::one_line;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review() -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": "app", "namespace": "demo", "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"}},
                "dryRun": false
            }
        })
    }

    #[test]
    fn golden_patch_is_base64_with_patch_type() {
        let body = review().to_string();
        let (v, req) = parse(body.as_bytes()).unwrap();
        let patch = vec![Op::add(
            json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "labels"]),
            json!({}),
        )];
        let a = answer(&v, &req, Decision::allow().with_patch(patch).warn("w"));
        assert_eq!(
            String::from_utf8(a.body).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true,"patch":"W3sib3AiOiJhZGQiLCJwYXRoIjoiL21ldGFkYXRhL2xhYmVscyIsInZhbHVlIjp7fX1d","patchType":"JSONPatch","warnings":["w"]}}"#
        );
    }

    #[test]
    fn golden_denial() {
        let body = review().to_string();
        let (v, req) = parse(body.as_bytes()).unwrap();
        let a = answer(&v, &req, Decision::deny("no"));
        assert_eq!(
            String::from_utf8(a.body).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":false,"status":{"code":403,"reason":"Forbidden","message":"no"}}}"#
        );
    }

    #[test]
    fn every_shape_of_answer_is_the_json_it_should_be() {
        let body = review().to_string();
        let (v, req) = parse(body.as_bytes()).unwrap();
        let mut informed = Decision::allow().warn("a \"quoted\"\nline").warn("ü");
        informed.message = Some("fine <&>".into());
        let cases = [
            (
                informed,
                json!({"uid": req.uid, "allowed": true, "status": {"code": 200, "message": "fine <&>"},
                       "warnings": ["a \"quoted\"\nline", "ü"]}),
            ),
            (
                Decision {
                    allowed: false,
                    ..Decision::default()
                },
                json!({"uid": req.uid, "allowed": false,
                       "status": {"code": 403, "reason": "Forbidden", "message": "denied"}}),
            ),
            (Decision::allow(), json!({"uid": req.uid, "allowed": true})),
        ];
        for (decision, response) in cases {
            let a = answer(&v, &req, decision);
            let got: Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(
                got,
                json!({"apiVersion": ADMISSION_V1, "kind": "AdmissionReview", "response": response})
            );
        }
    }

    #[test]
    fn the_objects_name_is_read_wherever_its_metadata_is() {
        let mut r = review();
        let name = |r: &Value| {
            let body = r.to_string();
            parse(body.as_bytes()).map(|(_, req)| req.object.and_then(|o| o.name))
        };
        assert_eq!(name(&r), Ok(Some("app".into())));
        // Written after spec (not what the API server does): still found.
        let object = r["request"]["object"].to_string();
        let body = r.to_string().replace(
            &object,
            r#"{"spec":{"x":[1,{"a":"}"}]},"kind":"Deployment","metadata":{"namespace":"n","name":"late"}}"#,
        );
        assert!(body.contains("late"));
        let (_, req) = parse(body.as_bytes()).unwrap();
        assert_eq!(req.object.and_then(|o| o.name).as_deref(), Some("late"));
        r["request"]["object"] = json!({"metadata": null, "spec": {}});
        assert_eq!(name(&r), Ok(None));
        for bad in [
            json!({"metadata": 5}),
            json!({"metadata": {"name": 1}}),
            json!([1]),
        ] {
            r["request"]["object"] = bad.clone();
            assert!(
                matches!(name(&r), Err(ReviewError::NotAdmissionReview(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        assert!(matches!(parse(b"{nope"), Err(ReviewError::NotJson(_))));
        assert!(matches!(
            parse(b"[]"),
            Err(ReviewError::NotAdmissionReview(_))
        ));
        assert!(matches!(
            parse(br#"{"kind":"Pod","apiVersion":"v1"}"#),
            Err(ReviewError::NotAdmissionReview(_))
        ));
        assert!(matches!(
            parse(br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{}}"#),
            Err(ReviewError::UnsupportedVersion(_))
        ));
        assert_eq!(
            parse(br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#).unwrap_err(),
            ReviewError::MissingRequest
        );
        let mut r = review();
        r["request"]["operation"] = json!("EXPLODE");
        let e = parse(r.to_string().as_bytes()).unwrap_err();
        assert!(matches!(e, ReviewError::NotAdmissionReview(_)));
        assert!(!e.to_string().contains('\n'));
    }
}
