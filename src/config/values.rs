//! The small value languages of `gateway.yaml`: durations (`250ms`, `10s`, `5m`), sizes
//! (`64KiB`, `10MiB`, plain bytes) and `${ENV}` / `${ENV:-default}` interpolation.

use ipnet::IpNet;
use serde::Deserialize;
use serde_yaml::Value;
use std::net::IpAddr;
use std::time::Duration;

/// `250ms`, `10s`, `5m`, `1h`. A unit is required: a bare number is ambiguous.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!(
            "invalid duration {text:?}: expected a number and a unit (ms, s, m, h), e.g. \"10s\""
        )
    })?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {text:?}"))
}

/// `64KiB`, `10MiB`, `1GiB`, `512B`, or a plain number of bytes. `KB`/`MB` are decimal.
/// One prefix as written: `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host). Bits
/// below the prefix length are ignored (`10.1.2.3/8` is `10.0.0.0/8`), as nginx does.
pub fn parse_prefix(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            format!("invalid prefix {text:?}: expected an address or ADDRESS/BITS, e.g. 10.0.0.0/8 or 2001:db8::/32")
        })
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| {
        format!("invalid size {text:?}: expected a number with an optional unit, e.g. \"64KiB\"")
    })?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unit must be B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// Replaces `${NAME}` and `${NAME:-default}` with the environment's values. `$$` is a literal
/// `$`. An unset variable without a default is an error that names it.
pub(crate) fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated \"${{\" in {text:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid variable name {name:?} in {text:?}"));
            }
            match (env(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A scalar read as text whatever its YAML type (`10` or `"10s"`), so durations and sizes get
/// one message about their units instead of a type error.
#[derive(Debug, Clone)]
pub(crate) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(Scalar(s)),
            Value::Number(n) => Ok(Scalar(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a duration or size, found {}",
                kind_of(&other)
            ))),
        }
    }
}

/// What a YAML value is, for messages: `a mapping`, `a list`, `a string` …
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// `key: client_ip` or `key: [client_ip, header:x-api-key]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").unwrap_err().contains("unit"));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn interpolation() {
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        assert_eq!(interpolate("a ${TOKEN} b", &env).unwrap(), "a s3cret b");
        assert_eq!(interpolate("${MISSING:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${TOKEN:-x}", &env).unwrap(), "s3cret");
        assert_eq!(interpolate("cost $$5 $x", &env).unwrap(), "cost $5 $x");
        assert!(interpolate("${MISSING}", &env)
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(interpolate("${BAD NAME}", &env).is_err());
        assert!(interpolate("${OPEN", &env).is_err());
    }
}
