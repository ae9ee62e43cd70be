//! Phase 2 for leaves: converting a [`Val`] into its typed value with range checks, and the
//! text formats of the tree: durations (`"250ms"`, `"30s"`, `"5m"`, `"1h30m"`) and sizes
//! (`"512KB"`, `"4MiB"`).

use core::time::Duration;

use echelon_domain::secret::Secret;

use crate::de::{Raw, Val};
use crate::diagnostic::{Diagnostic, DiagnosticKind, did_you_mean};

/// Why a raw value could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub kind: DiagnosticKind,
    pub reason: String,
    pub help: Option<String>,
}

impl Problem {
    fn wrong_type(expected: &str, raw: &Raw) -> Self {
        Self {
            kind: DiagnosticKind::WrongType,
            reason: format!("expected {expected}, found {}", raw.type_name()),
            help: None,
        }
    }

    fn invalid(reason: String, help: Option<String>) -> Self {
        Self {
            kind: DiagnosticKind::InvalidValue,
            reason,
            help,
        }
    }
}

/// A type a leaf converts to.
pub(crate) trait FromVal: Sized {
    /// Converts the raw value.
    fn convert(raw: &Raw) -> Result<Self, Problem>;

    /// The value as a diagnostic may print it (only called for non-secret types).
    fn show(&self) -> String;
}

/// The range of durations that must be positive (timeouts, deadlines).
pub(crate) const POSITIVE: Range<Duration> = Range::AtLeast(Duration::from_millis(1));

/// An allowed range.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Range<T> {
    /// `value >= min`.
    AtLeast(T),
    /// `min <= value <= max`.
    Between(T, T),
}

impl<T: FromVal + PartialOrd> Range<T> {
    fn check(&self, value: &T) -> Result<(), String> {
        match self {
            Self::AtLeast(min) if value < min => Err(format!(
                "must be at least {}, found {}",
                min.show(),
                value.show()
            )),
            Self::Between(min, max) if value < min || value > max => Err(format!(
                "must be between {} and {}, found {}",
                min.show(),
                max.show(),
                value.show()
            )),
            _ => Ok(()),
        }
    }
}

impl<T: FromVal> Val<T> {
    /// The converted value; a problem becomes a diagnostic in `out`.
    pub(crate) fn get(&self, out: &mut Vec<Diagnostic>) -> Option<T> {
        match T::convert(&self.raw) {
            Ok(value) => Some(value),
            Err(problem) => {
                let reason = if problem.kind == DiagnosticKind::OutOfRange {
                    format!("`{}` {}", self.field(), problem.reason)
                } else {
                    problem.reason
                };
                out.push(self.diagnostic(problem.kind, reason, problem.help));
                None
            }
        }
    }

    /// The converted value, checked against `range`.
    pub(crate) fn get_in(&self, out: &mut Vec<Diagnostic>, range: &Range<T>) -> Option<T>
    where
        T: PartialOrd,
    {
        let value = self.get(out)?;
        match range.check(&value) {
            Ok(()) => Some(value),
            Err(reason) => {
                out.push(self.diagnostic(
                    DiagnosticKind::OutOfRange,
                    format!("`{}` {reason}", self.field()),
                    None,
                ));
                None
            }
        }
    }

    /// The last key of the path (`weight` of `pools.p.instances[0].weight`).
    fn field(&self) -> &str {
        let last = self.key.rsplit('.').next().unwrap_or(&self.key);
        last.split('[').next().unwrap_or(last)
    }

    /// A diagnostic about this value.
    pub(crate) fn diagnostic(
        &self,
        kind: DiagnosticKind,
        reason: impl Into<String>,
        help: Option<String>,
    ) -> Diagnostic {
        Diagnostic::error(kind, reason)
            .at(self.location.clone())
            .key(self.key.clone())
            .maybe_help(help)
    }
}

/// Reading optional leaves with defaults.
pub(crate) trait OptVal<T> {
    /// The value, or `None` when absent or invalid (invalid is reported).
    fn value(&self, out: &mut Vec<Diagnostic>) -> Option<T>;
    /// The value checked against a range, or `None` when absent or invalid.
    fn value_in(&self, out: &mut Vec<Diagnostic>, range: Range<T>) -> Option<T>
    where
        T: PartialOrd;
    /// The value, or `default` when absent (or invalid, which is reported).
    fn read_or(&self, out: &mut Vec<Diagnostic>, default: T) -> T;
    /// The value checked against a range, or `default`.
    fn read_or_in(&self, out: &mut Vec<Diagnostic>, range: Range<T>, default: T) -> T
    where
        T: PartialOrd;
}

impl<T: FromVal> OptVal<T> for Option<Val<T>> {
    fn value(&self, out: &mut Vec<Diagnostic>) -> Option<T> {
        self.as_ref()?.get(out)
    }

    fn value_in(&self, out: &mut Vec<Diagnostic>, range: Range<T>) -> Option<T>
    where
        T: PartialOrd,
    {
        self.as_ref()?.get_in(out, &range)
    }

    fn read_or(&self, out: &mut Vec<Diagnostic>, default: T) -> T {
        self.value(out).unwrap_or(default)
    }

    fn read_or_in(&self, out: &mut Vec<Diagnostic>, range: Range<T>, default: T) -> T
    where
        T: PartialOrd,
    {
        self.value_in(out, range).unwrap_or(default)
    }
}

/// The text a diagnostic may show for a raw string, quoted; `None` when it came from an override.
pub(crate) fn shown(raw: &Raw) -> Option<String> {
    match raw {
        Raw::Str { shown, .. } => shown.as_ref().map(|s| format!("`{s}`")),
        Raw::Int(i) => Some(format!("`{i}`")),
        Raw::Float(f) => Some(format!("`{f}`")),
        Raw::Bool(b) => Some(format!("`{b}`")),
        Raw::Other(_) => None,
    }
}

/// `what `value``, or just `what` when the value may not be shown.
pub(crate) fn describe(what: &str, raw: &Raw) -> String {
    match shown(raw) {
        Some(value) => format!("{what} {value}"),
        None => what.to_owned(),
    }
}

fn int_from(raw: &Raw) -> Result<i64, Problem> {
    match raw {
        Raw::Int(i) => Ok(*i),
        Raw::Str {
            value, convertible, ..
        } => {
            if *convertible {
                value.trim().parse().map_err(|_| {
                    Problem::invalid(describe("expected an integer, found the string", raw), None)
                })
            } else {
                let mut problem = Problem::wrong_type("an integer", raw);
                if value.trim().parse::<i64>().is_ok() {
                    problem.help = Some("remove the quotes".to_owned());
                }
                Err(problem)
            }
        }
        _ => Err(Problem::wrong_type("an integer", raw)),
    }
}

macro_rules! int_from_val {
    ($($t:ty),*) => {$(
        impl FromVal for $t {
            fn convert(raw: &Raw) -> Result<Self, Problem> {
                let i = int_from(raw)?;
                <$t>::try_from(i).map_err(|_| Problem {
                    kind: DiagnosticKind::OutOfRange,
                    reason: if i < 0 {
                        format!("must not be negative, found {i}")
                    } else {
                        format!("must be at most {}, found {i}", <$t>::MAX)
                    },
                    help: None,
                })
            }

            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

int_from_val!(u16, u32, u64);

impl FromVal for f64 {
    fn convert(raw: &Raw) -> Result<Self, Problem> {
        let value = match raw {
            #[allow(
                clippy::cast_precision_loss,
                reason = "configuration numbers are small"
            )]
            Raw::Int(i) => *i as f64,
            Raw::Float(f) => *f,
            Raw::Str {
                value,
                convertible: true,
                ..
            } => value.trim().parse().map_err(|_| {
                Problem::invalid(describe("expected a number, found the string", raw), None)
            })?,
            _ => return Err(Problem::wrong_type("a number", raw)),
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(Problem::invalid(
                "expected a finite number".to_owned(),
                None,
            ))
        }
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

impl FromVal for f32 {
    fn convert(raw: &Raw) -> Result<Self, Problem> {
        #[allow(clippy::cast_possible_truncation, reason = "temperatures are small")]
        f64::convert(raw).map(|v| v as f32)
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

impl FromVal for bool {
    fn convert(raw: &Raw) -> Result<Self, Problem> {
        match raw {
            Raw::Bool(b) => Ok(*b),
            Raw::Str {
                value,
                convertible: true,
                ..
            } => match value.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Problem::invalid(
                    describe("expected `true` or `false`, found the string", raw),
                    None,
                )),
            },
            _ => Err(Problem::wrong_type("a boolean", raw)),
        }
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

impl FromVal for String {
    fn convert(raw: &Raw) -> Result<Self, Problem> {
        match raw {
            Raw::Str { value, .. } => Ok(value.clone()),
            _ => Err(Problem::wrong_type("a string", raw)),
        }
    }

    fn show(&self) -> String {
        format!("`{self}`")
    }
}

impl FromVal for Secret {
    fn convert(raw: &Raw) -> Result<Self, Problem> {
        match raw {
            Raw::Str { value, .. } => Ok(Secret::new(value.as_str())),
            _ => Err(Problem::wrong_type("a string", raw)),
        }
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

/// A duration written as text.
impl FromVal for Duration {
    fn convert(raw: &Raw) -> Result<Self, Problem> {
        match raw {
            Raw::Str { value, .. } => parse_duration(value)
                .map_err(|help| Problem::invalid(describe("invalid duration", raw), Some(help))),
            Raw::Int(i) => Err(Problem {
                kind: DiagnosticKind::WrongType,
                reason: "expected a duration string, found an integer".to_owned(),
                help: Some(format!(
                    "durations need a unit: write \"{i}s\" or \"{i}ms\""
                )),
            }),
            _ => Err(Problem::wrong_type(
                "a duration string such as \"30s\"",
                raw,
            )),
        }
    }

    fn show(&self) -> String {
        echelon_domain::time::DurationText(*self).to_string()
    }
}

/// A size in bytes, written as text (`"4MiB"`) or as a plain integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ByteSize(pub u64);

impl FromVal for ByteSize {
    fn convert(raw: &Raw) -> Result<Self, Problem> {
        match raw {
            Raw::Str { value, .. } => parse_size(value)
                .map(ByteSize)
                .map_err(|help| Problem::invalid(describe("invalid size", raw), Some(help))),
            Raw::Int(i) => u64::try_from(*i).map(ByteSize).map_err(|_| Problem {
                kind: DiagnosticKind::OutOfRange,
                reason: "a size cannot be negative".to_owned(),
                help: None,
            }),
            _ => Err(Problem::wrong_type("a size such as \"4MiB\"", raw)),
        }
    }

    fn show(&self) -> String {
        format_size(self.0)
    }
}

const DURATION_HELP: &str =
    "write a number and a unit (ms, s, m, h, d), e.g. \"250ms\", \"30s\", \"5m\" or \"1h30m\"";

/// Longest duration accepted: ten years is far beyond any sensible timeout.
const MAX_DURATION_NANOS: u128 = 10 * 365 * 86_400 * 1_000_000_000;

/// Parses `"250ms"`, `"30s"`, `"1.5s"`, `"5m"`, `"1h30m"`, `"2d"`, `"12.5us"` or `"0"`: the one
/// duration parser, for configuration files, the command line and the admin API's durations
/// (which [`DurationText`](echelon_domain::time::DurationText) writes). Decimal fractions are
/// read exactly, so whatever `DurationText` writes reads back to the same value. The error is a
/// help text.
///
/// # Errors
/// When the text is not a number with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `min`, `h`,
/// `d`), or is longer than ten years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("add a unit, e.g. \"{text}s\" or \"{text}ms\""));
    }
    if text.is_empty() {
        return Err(DURATION_HELP.to_owned());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit.trim() {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" | "min" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => return Err(DURATION_HELP.to_owned()),
        };
        let nanos =
            decimal_times(number, nanos_per_unit).ok_or_else(|| DURATION_HELP.to_owned())?;
        total = total.saturating_add(nanos);
        if total > MAX_DURATION_NANOS {
            return Err("the duration is too long".to_owned());
        }
        rest = after;
    }
    let nanos = u64::try_from(total).map_err(|_| "the duration is too long".to_owned())?;
    Ok(Duration::from_nanos(nanos))
}

/// `number × unit` for a decimal `number` (`12`, `1.5`, `.25`), exactly, rounded half up to a
/// whole nanosecond; `None` when it is not a decimal number or is far too large.
fn decimal_times(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.len() > 24
    {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // Digits past the 18th are below a nanosecond of any unit.
    let fraction = &fraction[..fraction.len().min(18)];
    let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let part = (fraction * unit + scale / 2) / scale;
    whole.checked_mul(unit)?.checked_add(part)
}

const SIZE_HELP: &str =
    "write a number and a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. \"512KB\" or \"4MiB\"";

/// Parses `"512KB"`, `"4MiB"`, `"1.5GB"`, `"100B"` or `"1024"` into bytes; the error is a help
/// text.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_len);
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1_048_576.0,
        "gib" => 1_073_741_824.0,
        _ => return Err(SIZE_HELP.to_owned()),
    };
    let value: f64 = number.parse().map_err(|_| SIZE_HELP.to_owned())?;
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes > 1e18 {
        return Err("the size is too large".to_owned());
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked finite, non-negative and bounded above"
    )]
    Ok(bytes.round() as u64)
}

/// Renders a size: `4MiB`, `512KB`, `100B`.
pub(crate) fn format_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    for (unit, size) in [("GB", 1_000_000_000u64), ("MB", 1_000_000), ("KB", 1000)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// A closed set of names chosen in the tree (`rotation = "round_robin"`).
pub(crate) trait Choice: Copy + 'static {
    /// What it is called in messages, e.g. `rotation strategy`.
    const WHAT: &'static str;
    /// Every value with its name.
    fn names() -> &'static [(Self, &'static str)];
}

/// Implements [`FromVal`] for [`Choice`] types.
macro_rules! choice_from_val {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::value::FromVal for $t {
            fn convert(raw: &$crate::de::Raw) -> Result<Self, $crate::value::Problem> {
                $crate::value::convert_choice(raw)
            }

            fn show(&self) -> String {
                $crate::value::choice_name(*self).to_owned()
            }
        }
    )*};
}
pub(crate) use choice_from_val;

/// Converts a name of a [`Choice`], suggesting the closest name on a typo.
pub(crate) fn convert_choice<T: Choice + PartialEq>(raw: &Raw) -> Result<T, Problem> {
    let Raw::Str { value, .. } = raw else {
        return Err(Problem::wrong_type(&format!("a {} name", T::WHAT), raw));
    };
    if let Some((choice, _)) = T::names().iter().find(|(_, name)| *name == value.trim()) {
        return Ok(*choice);
    }
    let names = T::names().iter().map(|(_, name)| *name);
    let help = did_you_mean(value, names.clone()).unwrap_or_else(|| {
        format!(
            "expected one of {}",
            names
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    Err(Problem::invalid(
        describe(&format!("unknown {}", T::WHAT), raw),
        Some(help),
    ))
}

/// The name of a [`Choice`] value.
pub(crate) fn choice_name<T: Choice + PartialEq>(value: T) -> &'static str {
    T::names()
        .iter()
        .find(|(v, _)| *v == value)
        .map_or("?", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_units_fractions_and_compounds() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("2d"), Ok(ms(172_800_000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 10 s "), Ok(ms(10_000)));
        assert!(parse_duration("30").unwrap_err().contains("\"30s\""));
        for bad in [
            "",
            "s",
            "5x",
            "1.2.3s",
            "-5s",
            "5 seconds",
            "99999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_render_as_written() {
        use echelon_domain::time::DurationText;
        for text in [
            "250ms", "30s", "5m", "1h30m", "2d", "0s", "1m5s", "1.5s", "12.5us", "7ns",
        ] {
            assert_eq!(
                DurationText(parse_duration(text).unwrap()).to_string(),
                text
            );
        }
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0.0000000014s"), Ok(Duration::from_nanos(1)));
    }

    proptest::proptest! {
        #[test]
        fn what_duration_text_writes_reads_back_exactly(nanos in 0u64..=315_360_000_000_000_000) {
            let duration = Duration::from_nanos(nanos);
            let text = echelon_domain::time::DurationText(duration).to_string();
            proptest::prop_assert_eq!(parse_duration(&text), Ok(duration), "{}", text);
            let approx = echelon_domain::time::DurationText::approx(duration);
            proptest::prop_assert_eq!(parse_duration(&approx.to_string()), Ok(approx.0));
        }
    }

    #[test]
    fn sizes_parse_decimal_and_binary_units() {
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("512KB"), Ok(512_000));
        assert_eq!(parse_size("1.5kib"), Ok(1536));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("4 megs").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(format_size(4 * 1024 * 1024), "4MiB");
        assert_eq!(format_size(512_000), "500KiB");
        assert_eq!(format_size(300_000), "300KB");
        assert_eq!(format_size(100), "100B");
    }

    #[test]
    fn literal_strings_are_not_numbers_but_injected_ones_are() {
        let literal = Raw::Str {
            value: "3".into(),
            shown: Some("3".into()),
            convertible: false,
        };
        let problem = u32::convert(&literal).unwrap_err();
        assert_eq!(problem.kind, DiagnosticKind::WrongType);
        assert_eq!(problem.help.as_deref(), Some("remove the quotes"));
        let injected = Raw::Str {
            value: "3".into(),
            shown: Some("${N}".into()),
            convertible: true,
        };
        assert_eq!(u32::convert(&injected), Ok(3));
        let flag = Raw::Str {
            value: "true".into(),
            shown: None,
            convertible: true,
        };
        assert_eq!(bool::convert(&flag), Ok(true));
        assert_eq!(
            u16::convert(&Raw::Int(70_000)).unwrap_err().kind,
            DiagnosticKind::OutOfRange
        );
    }

    #[test]
    fn errors_show_templates_never_injected_values() {
        let injected = Raw::Str {
            value: "sk-secret".into(),
            shown: Some("${KEY}".into()),
            convertible: true,
        };
        let problem = Duration::convert(&injected).unwrap_err();
        assert!(!format!("{problem:?}").contains("sk-secret"));
        assert_eq!(problem.reason, "invalid duration `${KEY}`");
        let overridden = Raw::Str {
            value: "sk-secret".into(),
            shown: None,
            convertible: true,
        };
        assert_eq!(
            Duration::convert(&overridden).unwrap_err().reason,
            "invalid duration"
        );
    }

    #[test]
    fn ranges_report_bounds_and_value() {
        let mut out = Vec::new();
        let val: Val<u32> = Val::literal(Raw::Int(0), "pools.p.instances[0].weight");
        assert_eq!(val.get_in(&mut out, &Range::AtLeast(1)), None);
        assert_eq!(out[0].reason, "`weight` must be at least 1, found 0");
        let rate: Val<f64> = Val::literal(Raw::Float(1.5), "providers.m.mock.error_rate");
        assert_eq!(rate.get_in(&mut out, &Range::Between(0.0, 1.0)), None);
        assert_eq!(
            out[1].reason,
            "`error_rate` must be between 0 and 1, found 1.5"
        );
    }
}
