//! Choosing a content coding from `Accept-Encoding` (RFC 9110 §12.5.3): q-values decide, the
//! server's preference order breaks ties, `*` stands for codings not named, and q=0 refuses.
//! No acceptable coding means identity: the response is sent as it is.

/// A coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Algorithm {
    Brotli,
    Zstd,
    Gzip,
}

impl Algorithm {
    /// The `Content-Encoding` token.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Algorithm::Brotli => "br",
            Algorithm::Zstd => "zstd",
            Algorithm::Gzip => "gzip",
        }
    }

    pub(crate) fn from_token(token: &str) -> Option<Algorithm> {
        [Algorithm::Brotli, Algorithm::Zstd, Algorithm::Gzip]
            .into_iter()
            .find(|a| a.token() == token)
    }

    /// Whether an `Accept-Encoding` token names this coding (`x-gzip` is gzip).
    fn named_by(self, token: &str) -> bool {
        token.eq_ignore_ascii_case(self.token())
            || (self == Algorithm::Gzip && token.eq_ignore_ascii_case("x-gzip"))
    }
}

/// The best of `preferred` (server order) that the `Accept-Encoding` field values (walked
/// once per candidate) accept.
pub(crate) fn choose<'v, I: Iterator<Item = &'v [u8]>>(
    values: impl Fn() -> I,
    preferred: &[Algorithm],
) -> Option<Algorithm> {
    let mut best: Option<(Algorithm, u16)> = None;
    for &algorithm in preferred {
        let q = weight(values(), algorithm).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, top)| q > top) {
            best = Some((algorithm, q));
        }
    }
    best.map(|(algorithm, _)| algorithm)
}

/// The weight (in thousandths) the field gives `algorithm`: its own entry, else `*`'s; `None`
/// when neither appears.
fn weight<'v>(values: impl Iterator<Item = &'v [u8]>, algorithm: Algorithm) -> Option<u16> {
    let mut named = None;
    let mut any = None;
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for element in text.split(',') {
            let mut parts = element.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let Some(q) = parts.map(str::trim).try_fold(1000u16, |q, param| {
                match param.split_once('=') {
                    Some((name, value)) if name.trim().eq_ignore_ascii_case("q") => {
                        qvalue(value.trim())
                    }
                    _ => Some(q),
                }
            }) else {
                // A malformed weight: the element is ignored.
                continue;
            };
            if algorithm.named_by(token) {
                named = Some(named.map_or(q, |known: u16| known.min(q)));
            } else if token == "*" {
                any = Some(any.map_or(q, |known: u16| known.min(q)));
            }
        }
    }
    named.or(any)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Algorithm; 3] = [Algorithm::Brotli, Algorithm::Zstd, Algorithm::Gzip];

    fn pick(header: &str) -> Option<Algorithm> {
        let values = [header.as_bytes()];
        choose(|| values.iter().copied(), &ALL)
    }

    #[test]
    fn q_values_decide_and_server_order_breaks_ties() {
        assert_eq!(pick("gzip, br"), Some(Algorithm::Brotli));
        assert_eq!(pick("gzip;q=1, br;q=0.5"), Some(Algorithm::Gzip));
        assert_eq!(pick("zstd;q=0.9, gzip;q=0.9"), Some(Algorithm::Zstd));
        assert_eq!(pick("GZIP"), Some(Algorithm::Gzip));
        assert_eq!(pick("x-gzip"), Some(Algorithm::Gzip));
        assert_eq!(pick("deflate"), None);
        assert_eq!(pick(""), None);
    }

    #[test]
    fn star_covers_unnamed_codings_and_zero_refuses() {
        assert_eq!(pick("*"), Some(Algorithm::Brotli));
        assert_eq!(pick("br;q=0, *"), Some(Algorithm::Zstd));
        assert_eq!(pick("identity;q=1, *;q=0"), None);
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(pick("*;q=0, gzip"), Some(Algorithm::Gzip));
    }

    #[test]
    fn malformed_weights_drop_their_element() {
        assert_eq!(pick("br;q=2, gzip"), Some(Algorithm::Gzip));
        assert_eq!(pick("br;q=0.5000, gzip;q=0.1"), Some(Algorithm::Gzip));
        assert_eq!(pick("br;q=abc"), None);
        assert_eq!(pick("br;q=1.0"), Some(Algorithm::Brotli));
        assert_eq!(pick("br;q=1.5"), None);
        assert_eq!(pick("br ; Q=0.2 , gzip;q=0.1"), Some(Algorithm::Brotli));
    }

    #[test]
    fn several_field_lines_combine() {
        let values = [b"gzip;q=0.2".as_slice(), b"zstd".as_slice()];
        assert_eq!(choose(|| values.iter().copied(), &ALL), Some(Algorithm::Zstd));
        // A coding named twice takes its lower weight.
        let values = [b"br".as_slice(), b"br;q=0".as_slice()];
        assert_eq!(choose(|| values.iter().copied(), &ALL), None);
    }
}
