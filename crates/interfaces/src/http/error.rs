//! The one place where failures become HTTP answers in OpenAI's error shape.

use std::fmt::Write as _;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use echelon_application::gateway::{FailedRequest, ServeError};
use echelon_domain::plan::{AttemptRecord, AttemptResult, Verdict};
use echelon_domain::routing::ResolveError;

use echelon_infrastructure::wire::openai::{BadRequest, ErrorBody};

/// An error answer: status, OpenAI error fields and optional `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// A stable machine-readable code.
    pub code: Box<str>,
    /// What went wrong and what to do, for people.
    pub message: Box<str>,
    /// The request field at fault.
    pub param: Option<Box<str>>,
    /// When to come back, for 429 and 503.
    pub retry_after: Option<Duration>,
    /// How many upstream attempts were made, for `x-echelon-attempts`.
    pub attempts: Option<usize>,
}

impl ApiError {
    /// An error without `param` or `Retry-After`.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code: code.into(),
            message: message.into().into_boxed_str(),
            param: None,
            retry_after: None,
            attempts: None,
        }
    }

    /// 401 for a missing or wrong API key.
    pub fn unauthorized(missing: bool) -> Self {
        let message = if missing {
            "missing API key: send it as `Authorization: Bearer <key>`"
        } else {
            "invalid API key"
        };
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            message,
        )
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!(
                "request body is larger than the gateway's limit of {limit} bytes (server.max_body_size)"
            ),
        )
    }

    /// 503 while the gateway drains for shutdown.
    pub fn draining() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "shutting_down",
            "the gateway is shutting down; retry on another replica",
        )
    }

    /// The body as JSON bytes.
    pub fn body(&self) -> Vec<u8> {
        ErrorBody {
            message: &self.message,
            kind: self.kind,
            param: self.param.as_deref(),
            code: Some(&self.code),
        }
        .to_json()
    }

    /// The error as a final SSE event.
    pub fn sse_event(&self) -> Vec<u8> {
        ErrorBody {
            message: &self.message,
            kind: self.kind,
            param: self.param.as_deref(),
            code: Some(&self.code),
        }
        .to_sse_event()
    }
}

impl From<BadRequest> for ApiError {
    fn from(error: BadRequest) -> Self {
        let mut api = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            error.message,
        );
        api.param = error.param.map(String::into_boxed_str);
        api
    }
}

impl From<ResolveError> for ApiError {
    fn from(error: ResolveError) -> Self {
        let mut api = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("{error}; GET /v1/models lists every name this gateway serves"),
        );
        api.param = Some("model".into());
        api
    }
}

impl From<ServeError> for ApiError {
    fn from(error: ServeError) -> Self {
        match error {
            ServeError::UnknownModel(error) => error.into(),
            ServeError::Failed(failed) => from_failed(*failed),
        }
    }
}

fn from_failed(failed: FailedRequest) -> ApiError {
    let FailedRequest {
        verdict,
        route,
        attempts,
        ..
    } = failed;
    let count = attempts.len();
    let mut api = match verdict {
        Verdict::RateLimited { retry_after } => {
            let mut api = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limited",
                format!(
                    "every upstream of `{route}` is rate limited or at its limits; retry after {}s",
                    ceil_secs(retry_after)
                ),
            );
            api.retry_after = Some(retry_after);
            api
        }
        Verdict::Unavailable { retry_after } => {
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "no_healthy_upstream",
                format!(
                    "no upstream of `{route}` is available (breakers open, unhealthy or keys refused); `echelon route explain` shows why"
                ),
            );
            api.retry_after = retry_after;
            api
        }
        Verdict::Rejected(error) => {
            let status = error
                .status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(StatusCode::is_client_error)
                .unwrap_or(StatusCode::BAD_REQUEST);
            let code = error
                .code
                .as_deref()
                .map_or_else(|| error.class.as_str().to_owned(), ToOwned::to_owned);
            ApiError::new(
                status,
                "invalid_request_error",
                &code,
                format!("the upstream rejected the request: {}", error.message),
            )
        }
        Verdict::Exhausted { .. } | Verdict::Served => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "upstream_exhausted",
            format!(
                "every attempt for `{route}` failed: {}",
                describe_attempts(&attempts)
            ),
        ),
        Verdict::RetryBudgetSpent { .. } => {
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "retry_budget_exhausted",
                format!(
                    "an attempt for `{route}` failed and was not retried: the gateway's retry budget is spent (too many recent requests were retries already, so an outage is not multiplied); attempts: {}",
                    describe_attempts(&attempts)
                ),
            );
            api.retry_after = Some(Duration::from_secs(1));
            api
        }
        Verdict::DeadlineExceeded => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            "deadline_exceeded",
            format!(
                "`{route}` did not answer within the request deadline; attempts: {}",
                describe_attempts(&attempts)
            ),
        ),
        Verdict::ClientGone => ApiError::new(
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "invalid_request_error",
            "client_closed_request",
            "the client closed the request",
        ),
    };
    api.attempts = Some(count);
    api
}

/// `#1 group › echelon1 › openai/gpt-4o#0: server (HTTP 500); #2 …` — labels and classes only,
/// never keys or upstream bodies.
pub fn describe_attempts(attempts: &[AttemptRecord]) -> String {
    if attempts.is_empty() {
        return "none was made".to_owned();
    }
    let mut out = String::new();
    for (i, attempt) in attempts.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "#{} {}: ", attempt.number, attempt.label);
        match &attempt.result {
            AttemptResult::Success => out.push_str("success"),
            AttemptResult::Pending => out.push_str("pending"),
            AttemptResult::Cancelled => out.push_str("cancelled"),
            AttemptResult::Failed { class, status } => {
                out.push_str(class.as_str());
                if let Some(status) = status {
                    let _ = write!(out, " (HTTP {status})");
                }
            }
        }
    }
    out
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(retry_after) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(retry_after).max(1)),
            );
        }
        if let Some(attempts) = self.attempts {
            headers.insert("x-echelon-attempts", HeaderValue::from(attempts));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use echelon_domain::error::{ErrorClass, UpstreamError};
    use echelon_domain::name::{InstanceId, ModelRef};
    use std::sync::Arc;

    use echelon_domain::plan::{AttemptLabel, StageName};

    use super::*;

    fn record(number: u32, result: AttemptResult) -> AttemptRecord {
        let instance = InstanceId::new(ModelRef::new("openai", "gpt"), 0);
        AttemptRecord {
            number,
            label: AttemptLabel {
                stage: Some(Arc::new(StageName::Echelon(
                    "g".into(),
                    format!("echelon{number}").as_str().into(),
                ))),
                instance: instance.clone(),
            },
            instance,
            result,
            duration: None,
        }
    }

    fn failed(verdict: Verdict, attempts: Vec<AttemptRecord>) -> ApiError {
        ServeError::Failed(Box::new(FailedRequest {
            verdict,
            route: "chat › group:g".to_owned(),
            route_name: "chat".into(),
            attempts,
        }))
        .into()
    }

    #[test]
    fn verdicts_map_to_statuses_with_retry_after_where_it_helps() {
        let limited = failed(
            Verdict::RateLimited {
                retry_after: Duration::from_millis(1_200),
            },
            Vec::new(),
        );
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        let response = limited.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");

        let exhausted = failed(
            Verdict::Exhausted { last_error: None },
            vec![
                record(
                    1,
                    AttemptResult::Failed {
                        class: ErrorClass::Server,
                        status: Some(500),
                    },
                ),
                record(
                    2,
                    AttemptResult::Failed {
                        class: ErrorClass::Timeout,
                        status: None,
                    },
                ),
            ],
        );
        assert_eq!(exhausted.status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            &*exhausted.message,
            "every attempt for `chat › group:g` failed: #1 g › echelon1 › openai/gpt#0: server (HTTP 500); #2 g › echelon2 › openai/gpt#0: timeout"
        );
        assert_eq!(exhausted.attempts, Some(2));

        let budget = failed(
            Verdict::RetryBudgetSpent { last_error: None },
            vec![record(
                1,
                AttemptResult::Failed {
                    class: ErrorClass::Server,
                    status: Some(503),
                },
            )],
        );
        assert_eq!(budget.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&*budget.code, "retry_budget_exhausted");
        assert!(
            budget.message.contains("retry budget is spent"),
            "{}",
            budget.message
        );
        assert_eq!(budget.into_response().headers()[header::RETRY_AFTER], "1");

        let rejected = failed(
            Verdict::Rejected(
                UpstreamError::new(ErrorClass::ContextLength, "too long")
                    .with_status(400)
                    .with_code("context_length_exceeded"),
            ),
            Vec::new(),
        );
        assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
        assert_eq!(&*rejected.code, "context_length_exceeded");

        assert_eq!(
            failed(Verdict::DeadlineExceeded, Vec::new()).status,
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            failed(Verdict::Unavailable { retry_after: None }, Vec::new()).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // The one mapping of verdicts to statuses (the domain has none): a content filter's 400
        // stays 400, a caller that went away is nginx's 499.
        let filtered = failed(
            Verdict::Rejected(UpstreamError::new(ErrorClass::ContentFilter, "no").with_status(400)),
            Vec::new(),
        );
        assert_eq!(filtered.status, StatusCode::BAD_REQUEST);
        assert_eq!(failed(Verdict::ClientGone, Vec::new()).status.as_u16(), 499);
    }

    #[test]
    fn unknown_model_is_404_pointing_at_the_model_list() {
        let error: ApiError = ResolveError::NotFound {
            name: "gtp-4".to_owned(),
        }
        .into();
        assert_eq!(error.status, StatusCode::NOT_FOUND);
        assert_eq!(&*error.code, "model_not_found");
        assert_eq!(error.param.as_deref(), Some("model"));
        assert!(error.message.contains("GET /v1/models"));
    }
}
