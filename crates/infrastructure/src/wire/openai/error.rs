//! The OpenAI error body, `{"error": {"message", "type", "param", "code"}}`, as the edge answers
//! every failure and ends a stream that cannot complete.

use std::fmt::Write as _;

use serde::Serialize;

/// An OpenAI-shaped error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody<'a> {
    /// What went wrong, for people.
    pub message: &'a str,
    /// OpenAI's error type (`invalid_request_error`, `rate_limit_error`, …).
    pub kind: &'a str,
    /// The request field at fault.
    pub param: Option<&'a str>,
    /// A stable machine-readable code (`model_not_found`, `rate_limited`, …).
    pub code: Option<&'a str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ErrorBody<'_> {
    fn envelope(&self) -> Envelope<'_> {
        Envelope {
            error: Inner {
                message: self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        }
    }

    /// The body as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.envelope()).unwrap_or_default()
    }

    /// The body as an SSE `error` event, which ends a stream that cannot complete.
    pub fn to_sse_event(&self) -> Vec<u8> {
        let mut out = String::from("event: error\ndata: ");
        let json = serde_json::to_string(&self.envelope()).unwrap_or_default();
        let _ = write!(out, "{json}\n\n");
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_in_openai_shape() {
        let error = ErrorBody {
            message: "no such model",
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        };
        let json: serde_json::Value = serde_json::from_slice(&error.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"message": "no such model", "type": "invalid_request_error",
                "param": "model", "code": "model_not_found"}})
        );
        assert!(
            std::str::from_utf8(&error.to_sse_event())
                .unwrap()
                .starts_with("event: error\ndata: {\"error\"")
        );
    }
}
