//! What several targets read their header fields from.

/// `name: value` lines, as the header fields of a map; lines that are no valid field are
/// left out.
pub(super) fn header_lines(text: &[u8]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for line in text.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            map.append(name, value);
        }
    }
    map
}
