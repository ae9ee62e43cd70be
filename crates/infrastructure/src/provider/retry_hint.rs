//! When an upstream asks to be left alone: `Retry-After`, `retry-after-ms` and rate-limit reset headers.
//!
//! Every parser takes the current wall-clock time as an argument, so tests pin it. Hints are
//! clamped to [`MAX_HINT`]: a broken header never parks an instance for a year.

use core::time::Duration;
use std::time::SystemTime;

use http::HeaderMap;

/// The longest wait a header can ask for; longer values are clamped.
pub const MAX_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// OpenAI's reset headers, each with the header that says whether its budget is spent.
const OPENAI_RESETS: &[(&str, &str)] = &[
    (
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-requests",
    ),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
];

/// Anthropic's reset headers (RFC 3339 instants), with their remaining-budget headers.
const ANTHROPIC_RESETS: &[(&str, &str)] = &[
    (
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-requests-remaining",
    ),
    (
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
    ),
];

/// The wait an upstream asked for, from its response headers.
///
/// Precedence: `retry-after-ms` (the most precise), then `Retry-After` (delta-seconds or an
/// HTTP-date), then the rate-limit reset headers of OpenAI (`x-ratelimit-reset-*`, durations
/// like `1s`, `6m0s`, `20ms`) and Anthropic (`anthropic-ratelimit-*-reset`, RFC 3339 instants).
/// Among reset headers, those whose budget is spent (`remaining` = 0) decide; when none says so,
/// the longest reset is taken, because waiting too little only earns another 429.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(parse_millis) {
        return Some(ms);
    }
    if let Some(wait) = header_str(headers, "retry-after").and_then(|v| parse_retry_after(v, now)) {
        return Some(wait);
    }
    let openai = OPENAI_RESETS.iter().map(|&(reset, remaining)| {
        (
            header_str(headers, reset).and_then(parse_go_duration),
            remaining,
        )
    });
    let anthropic = ANTHROPIC_RESETS.iter().map(|&(reset, remaining)| {
        let wait = header_str(headers, reset)
            .and_then(parse_rfc3339)
            .map(|at| until(at, now));
        (wait, remaining)
    });
    pick_reset(headers, openai.chain(anthropic))
}

fn pick_reset<'a>(
    headers: &HeaderMap,
    resets: impl Iterator<Item = (Option<Duration>, &'a str)>,
) -> Option<Duration> {
    let mut spent: Option<Duration> = None;
    let mut any: Option<Duration> = None;
    for (wait, remaining) in resets {
        let Some(wait) = wait else { continue };
        any = Some(any.map_or(wait, |a| a.max(wait)));
        if header_str(headers, remaining).is_some_and(|r| r.trim() == "0") {
            spent = Some(spent.map_or(wait, |s| s.max(wait)));
        }
    }
    spent.or(any)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn clamp(wait: Duration) -> Duration {
    wait.min(MAX_HINT)
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    clamp(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `retry-after-ms`: milliseconds, possibly fractional.
pub fn parse_millis(value: &str) -> Option<Duration> {
    let ms: f64 = value.trim().parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| {
        clamp(Duration::from_secs_f64(
            (ms / 1000.0).min(MAX_HINT.as_secs_f64()),
        ))
    })
}

/// `Retry-After`: delta-seconds (`120`, tolerated with a fraction) or an HTTP-date, measured from
/// `now`. A date in the past means no wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = value.parse().ok()?;
        return Some(clamp(Duration::from_secs_f64(
            secs.min(MAX_HINT.as_secs_f64()),
        )));
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| until(at, now))
}

/// A Go-style duration as OpenAI sends it: `1s`, `6m0s`, `1h2m3.5s`, `20ms`, `150us`, `0s`.
/// Also reads Google's `"30s"` / `"1.5s"` retry delays.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    (total.is_finite() && total >= 0.0)
        .then(|| clamp(Duration::from_secs_f64(total.min(MAX_HINT.as_secs_f64()))))
}

/// An RFC 3339 timestamp (`2026-01-02T03:04:05Z`, with optional fraction and `±hh:mm` offset).
pub fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let b = value.trim().as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: core::ops::Range<usize>| -> Option<i64> {
        let text = core::str::from_utf8(b.get(range)?).ok()?;
        text.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| text.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut pos = 19;
    let mut nanos: u32 = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        if pos == start {
            return None;
        }
        let digits = &value.trim()[start..pos.min(start + 9)];
        let scale = 10u32.pow(u32::try_from(9 - digits.len()).ok()?);
        nanos = digits.parse::<u32>().ok()? * scale;
    }
    let offset_secs: i64 = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let hours = num(pos + 1..pos + 3)?;
            let minutes = num(pos + 4..pos + 6)?;
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let unix = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let unix = u64::try_from(unix).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(unix, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration("150us"), Some(Duration::from_micros(150)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("999h"), Some(MAX_HINT));
        for bad in ["", "s", "5", "5x", "-1s", "1s2"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        // 1994-11-06T08:49:37Z is the RFC 9110 example date.
        let now = at(784_111_777 - 30);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 + 5)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_HINT));
    }

    #[test]
    fn rfc3339_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(at(0)));
        assert_eq!(parse_rfc3339("1994-11-06T08:49:37Z"), Some(at(784_111_777)));
        assert_eq!(
            parse_rfc3339("1994-11-06T10:49:37.250+02:00"),
            Some(at(784_111_777) + Duration::from_millis(250))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00-00:30"),
            Some(at(1_709_166_600))
        );
        for bad in [
            "",
            "1994-11-06",
            "1994-13-06T08:49:37Z",
            "1994-11-06T08:49:37",
            "x994-11-06T08:49:37Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_precedence() {
        let now = at(1_000);
        let h = headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
        let h = headers(&[("retry-after", "9"), ("x-ratelimit-reset-requests", "1m")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(9)));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn reset_headers_prefer_the_spent_budget() {
        let now = at(1_000);
        let h = headers(&[
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-reset-tokens", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
        ]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(1)));
        let h = headers(&[
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-reset-tokens", "1s"),
        ]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(360)));
        let h = headers(&[
            ("anthropic-ratelimit-requests-reset", "1970-01-01T00:17:00Z"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "1970-01-01T00:30:00Z"),
        ]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(20)));
    }
}
