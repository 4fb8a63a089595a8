//! admission.k8s.io/v1 on the wire: parsing a review and writing the answer.
//!
//! The answer is our own type rather than kube-core's `AdmissionResponse`,
//! whose `patch` serializes as an array of numbers (kube-rs/kube#1781); the
//! API server requires a base64 string, which a golden test pins.

use base64::Engine;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionReview, Operation};
use serde::Serialize;
use serde_json::Value;

use super::Request;

/// The only AdmissionReview version served.
pub const ADMISSION_V1: &str = "admission.k8s.io/v1";

/// A body that is not an AdmissionReview we can answer. The server maps every
/// variant to HTTP 400; `Display` is the one-line reason.
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
}

/// What one rule decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Denial reason (one line), or an informational message when allowed.
    pub message: Option<String>,
    /// JSON patch against the request's object; empty means no patch.
    pub patch: Vec<json_patch::PatchOperation>,
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
    pub fn with_patch(mut self, patch: Vec<json_patch::PatchOperation>) -> Self {
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

/// The review as the fast path reads it: the same fields as kube-core's
/// `AdmissionReview`, without its flattened `TypeMeta` (which makes serde
/// buffer the whole document before reading it).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<Request>,
}

/// Parses a request body into its apiVersion and request.
pub fn parse(body: &[u8]) -> Result<(String, Request), ReviewError> {
    // Fast path (every request the API server sends): one pass straight into
    // the typed request. Anything else takes the checked path below, which
    // names what is wrong.
    if let Ok(review) = serde_json::from_slice::<Incoming>(body)
        && review.kind == "AdmissionReview"
        && review.api_version == ADMISSION_V1
        && let Some(req) = review.request
    {
        return Ok((ADMISSION_V1.to_string(), req));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::NotJson(one_line(&e.to_string())))?;
    let Value::Object(map) = &value else {
        return Err(ReviewError::NotAdmissionReview(
            "expected a JSON object".into(),
        ));
    };
    match map.get("kind").and_then(Value::as_str) {
        Some("AdmissionReview") => {}
        Some(other) => {
            return Err(ReviewError::NotAdmissionReview(format!(
                "kind is {other:?}"
            )));
        }
        None => return Err(ReviewError::NotAdmissionReview("kind is missing".into())),
    }
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != ADMISSION_V1 {
        return Err(ReviewError::UnsupportedVersion(api_version.to_string()));
    }
    let api_version = api_version.to_string();
    if map.get("request").is_none_or(Value::is_null) {
        return Err(ReviewError::MissingRequest);
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(value)
        .map_err(|e| ReviewError::NotAdmissionReview(one_line(&e.to_string())))?;
    let req: Request = review.try_into().map_err(|_| ReviewError::MissingRequest)?;
    Ok((api_version, req))
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseReview<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct Status<'a> {
    code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: &'a str,
}

/// Serializes the answer to `req`: uid and apiVersion echoed, the patch as a
/// base64 string with `patchType: JSONPatch`.
pub fn answer(api_version: &str, req: &Request, decision: Decision) -> Answer {
    let patch_json = if decision.patch.is_empty() {
        None
    } else {
        // A Vec of patch operations always serializes.
        serde_json::to_vec(&decision.patch).ok()
    };
    let patch_bytes = patch_json.as_ref().map_or(0, Vec::len);
    let status = match (&decision.message, decision.allowed) {
        (Some(m), false) => Some(Status {
            code: 403,
            reason: Some("Forbidden"),
            message: m,
        }),
        (Some(m), true) => Some(Status {
            code: 200,
            reason: None,
            message: m,
        }),
        (None, false) => Some(Status {
            code: 403,
            reason: Some("Forbidden"),
            message: "denied",
        }),
        (None, true) => None,
    };
    let response = ResponseReview {
        api_version,
        kind: "AdmissionReview",
        response: Response {
            uid: &req.uid,
            allowed: decision.allowed,
            status,
            patch: patch_json
                .as_ref()
                .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
            patch_type: patch_json.as_ref().map(|_| "JSONPatch"),
            warnings: &decision.warnings,
        },
    };
    // Strings, bools and numbers only: serialization cannot fail.
    let body = serde_json::to_vec(&response).unwrap_or_default();
    Answer {
        body,
        uid: req.uid.clone(),
        kind: req.kind.kind.clone(),
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

/// Folds an error message onto one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let (v, req) = parse(review().to_string().as_bytes()).unwrap();
        let patch: Vec<json_patch::PatchOperation> =
            serde_json::from_value(json!([{"op": "add", "path": "/metadata/labels", "value": {}}]))
                .unwrap();
        let a = answer(&v, &req, Decision::allow().with_patch(patch).warn("w"));
        assert_eq!(
            String::from_utf8(a.body).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true,"patch":"W3sib3AiOiJhZGQiLCJwYXRoIjoiL21ldGFkYXRhL2xhYmVscyIsInZhbHVlIjp7fX1d","patchType":"JSONPatch","warnings":["w"]}}"#
        );
    }

    #[test]
    fn golden_denial() {
        let (v, req) = parse(review().to_string().as_bytes()).unwrap();
        let a = answer(&v, &req, Decision::deny("no"));
        assert_eq!(
            String::from_utf8(a.body).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":false,"status":{"code":403,"reason":"Forbidden","message":"no"}}}"#
        );
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
