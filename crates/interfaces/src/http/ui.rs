//! The live status page, `GET /ui`: one self-contained HTML page (inline CSS and vanilla JS, no
//! build step, no external assets) that polls `GET /admin/status` and `GET /admin/alerts` every
//! two seconds and shows pools, instances, task groups, history, probes and alerts.
//!
//! The page itself holds no data and needs no authentication; the admin endpoints it reads do
//! (the admin key the operator types is kept in the tab's `sessionStorage` and sent as a bearer
//! token). The page builds every element with `createElement`/`textContent`, so nothing the
//! gateway reports is parsed as HTML, and the Content-Security-Policy allows nothing but the page's
//! own inline code and same-origin requests.

use axum::http::{HeaderName, header};
use axum::response::IntoResponse;

/// The page, embedded in the binary.
pub const PAGE: &str = include_str!("ui/index.html");

/// The Content-Security-Policy sent with the page: inline style and script only, requests to the
/// gateway itself only, no frames, no plugins, no form posts, no `<base>` rewriting.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Serves the status page: HTML, never cached, under a strict Content-Security-Policy.
pub async fn page() -> impl IntoResponse {
    let headers: [(HeaderName, &'static str); 6] = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (headers, PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    #[tokio::test]
    async fn page_is_uncached_html_under_a_strict_policy() {
        let response = page().await.into_response();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains('*') && !csp.contains("http"), "{csp}");
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        assert_eq!(body, PAGE.as_bytes());
    }

    #[test]
    fn page_loads_nothing_from_elsewhere() {
        for needle in [
            "://", "src=", "href=", "@import", "url(", "<link", "<iframe",
        ] {
            assert!(
                !PAGE.contains(needle),
                "the page must be self-contained: `{needle}`"
            );
        }
        assert!(PAGE.contains("/admin/status") && PAGE.contains("/admin/alerts"));
    }

    #[test]
    fn page_never_parses_data_as_html() {
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(
                !PAGE.contains(needle),
                "the page must build text nodes only: `{needle}`"
            );
        }
    }
}
