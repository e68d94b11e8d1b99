//! A strict reference reading of an HTTP/1.1 request stream (RFC 9112), the other side of
//! the end-to-end target's differential: the requests it reads, in order, each with its
//! method and decoded body. It reads only the plain grammar. At the first thing outside
//! it, or that RFC 9112 leaves to the recipient (a bare LF, obs-fold, leading empty lines,
//! both framing fields, a list in `Content-Length`, a coding other than chunked, an
//! upgrade), it stops, and what follows is not compared. A request that asks to close ends
//! the reading too: a conforming server reads nothing after it.

/// One request as the reference reads it.
#[derive(Debug)]
pub(super) struct Framed {
    pub method: String,
    pub body: bytes::Bytes,
    /// Whether the stream held the whole body; a stream that ends inside one is read up to
    /// its end.
    pub complete: bool,
}

/// The requests of a stream, and whether they account for all of it.
#[derive(Debug)]
pub(super) struct Reading {
    pub requests: Vec<Framed>,
    /// False when the reading stopped at something it does not judge: requests after that
    /// point are unknown.
    pub whole: bool,
}

/// Why one request could not be read to its end.
enum Stop {
    /// The stream ended inside the request's body: the request as far as it went.
    EndedInBody(Framed),
    /// The stream ended: inside a head, nothing of it reached any server's application.
    Ended,
    /// Outside the strict grammar, or a recipient's choice.
    Unsure,
}

/// The longest `Content-Length` or chunk size read: beyond any input the fuzzer makes.
const MAX_DIGITS: usize = 15;

pub(super) fn read(stream: &[u8]) -> Reading {
    let mut requests = Vec::new();
    let mut at = 0;
    loop {
        if at == stream.len() {
            return Reading {
                requests,
                whole: true,
            };
        }
        match request(stream, &mut at) {
            Ok((framed, closes)) => {
                requests.push(framed);
                if closes {
                    return Reading {
                        requests,
                        whole: true,
                    };
                }
            }
            Err(Stop::EndedInBody(framed)) => {
                requests.push(framed);
                return Reading {
                    requests,
                    whole: true,
                };
            }
            Err(Stop::Ended) => {
                return Reading {
                    requests,
                    whole: true,
                }
            }
            Err(Stop::Unsure) => {
                return Reading {
                    requests,
                    whole: false,
                }
            }
        }
    }
}

/// One request from `at`: the request and whether it closes the connection.
fn request(stream: &[u8], at: &mut usize) -> Result<(Framed, bool), Stop> {
    let start = line(stream, at)?;
    let mut parts = start.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Stop::Unsure);
    };
    let old = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(Stop::Unsure),
    };
    if method.is_empty()
        || !method.iter().all(|b| is_tchar(*b))
        || target.is_empty()
        || !target.iter().all(|b| (0x21..=0x7e).contains(b))
        || method == b"CONNECT"
    {
        return Err(Stop::Unsure);
    }
    let fields = fields(stream, at)?;
    let named = |name: &'static str| {
        fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
    };
    if named("upgrade").next().is_some() {
        return Err(Stop::Unsure);
    }
    let connection = named("connection")
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|token| token.trim_ascii().to_ascii_lowercase())
        .collect::<Vec<_>>();
    let closes = if old {
        !connection.iter().any(|t| t == b"keep-alive")
    } else {
        connection.iter().any(|t| t == b"close")
    };
    let lengths: Vec<&[u8]> = named("content-length").collect();
    let codings: Vec<&[u8]> = named("transfer-encoding").collect();
    let method = String::from_utf8_lossy(method).into_owned();
    let body = match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => bytes::Bytes::new(),
        ([length], []) => {
            let length = decimal(length).ok_or(Stop::Unsure)?;
            let rest = &stream[*at..];
            if rest.len() < length {
                *at = stream.len();
                return Err(Stop::EndedInBody(Framed {
                    method,
                    body: rest.to_vec().into(),
                    complete: false,
                }));
            }
            *at += length;
            rest[..length].to_vec().into()
        }
        ([], [coding]) if !old && coding.eq_ignore_ascii_case(b"chunked") => {
            let mut body = Vec::new();
            match chunks(stream, at, &mut body) {
                Ok(()) => body.into(),
                Err(Stop::Ended | Stop::EndedInBody(_)) => {
                    return Err(Stop::EndedInBody(Framed {
                        method,
                        body: body.into(),
                        complete: false,
                    }))
                }
                Err(Stop::Unsure) => return Err(Stop::Unsure),
            }
        }
        _ => return Err(Stop::Unsure),
    };
    let framed = Framed {
        method,
        body,
        complete: true,
    };
    Ok((framed, closes))
}

/// A field line's name and value.
type Field<'a> = (&'a [u8], &'a [u8]);

/// Field lines up to the empty line that ends a head or a trailer section.
fn fields<'a>(stream: &'a [u8], at: &mut usize) -> Result<Vec<Field<'a>>, Stop> {
    let mut fields = Vec::new();
    loop {
        let line = line(stream, at)?;
        if line.is_empty() {
            return Ok(fields);
        }
        let colon = line.iter().position(|b| *b == b':').ok_or(Stop::Unsure)?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let value_byte = |b: &u8| matches!(b, b'\t' | 0x20..=0x7e | 0x80..=0xff);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) || !value.iter().all(value_byte) {
            return Err(Stop::Unsure);
        }
        fields.push((name, value));
    }
}

/// A chunked body from `at`, decoded into `body`, with its trailer section.
fn chunks(stream: &[u8], at: &mut usize, body: &mut Vec<u8>) -> Result<(), Stop> {
    loop {
        let line = line(stream, at)?;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > MAX_DIGITS || !extensions(&line[digits..]) {
            return Err(Stop::Unsure);
        }
        let text = std::str::from_utf8(&line[..digits]).map_err(|_| Stop::Unsure)?;
        let size = usize::from_str_radix(text, 16).map_err(|_| Stop::Unsure)?;
        if size == 0 {
            fields(stream, at)?;
            return Ok(());
        }
        let rest = &stream[*at..];
        if rest.len() < size {
            body.extend_from_slice(rest);
            *at = stream.len();
            return Err(Stop::Ended);
        }
        body.extend_from_slice(&rest[..size]);
        *at += size;
        match stream.get(*at..*at + 2) {
            Some(b"\r\n") => *at += 2,
            Some(_) => return Err(Stop::Unsure),
            None => {
                *at = stream.len();
                return Err(Stop::Ended);
            }
        }
    }
}

/// `*( ";" token [ "=" ( token / quoted-string ) ] )`, without the optional whitespace the
/// grammar allows around them.
fn extensions(mut rest: &[u8]) -> bool {
    while let Some(after) = rest.strip_prefix(b";") {
        let name = after.iter().take_while(|b| is_tchar(**b)).count();
        if name == 0 {
            return false;
        }
        rest = &after[name..];
        let Some(value) = rest.strip_prefix(b"=") else {
            continue;
        };
        let token = value.iter().take_while(|b| is_tchar(**b)).count();
        if token > 0 {
            rest = &value[token..];
        } else if let Some(quoted) = value.strip_prefix(b"\"") {
            let text = quoted
                .iter()
                .take_while(|b| matches!(b, b'\t' | b' ' | b'!' | 0x23..=0x5b | 0x5d..=0x7e))
                .count();
            match quoted[text..].strip_prefix(b"\"") {
                Some(after) => rest = after,
                None => return false,
            }
        } else {
            return false;
        }
    }
    rest.is_empty()
}

/// The next line from `at`, without its CRLF. A bare CR or LF is not judged.
fn line<'a>(stream: &'a [u8], at: &mut usize) -> Result<&'a [u8], Stop> {
    let rest = &stream[*at..];
    let Some(end) = rest.iter().position(|b| matches!(b, b'\r' | b'\n')) else {
        *at = stream.len();
        return Err(Stop::Ended);
    };
    match rest.get(end..end + 2) {
        Some(b"\r\n") => {
            *at += end + 2;
            Ok(&rest[..end])
        }
        Some(_) => Err(Stop::Unsure),
        None if rest[end] == b'\r' => {
            *at = stream.len();
            Err(Stop::Ended)
        }
        None => Err(Stop::Unsure),
    }
}

fn decimal(text: &[u8]) -> Option<usize> {
    if text.is_empty() || text.len() > MAX_DIGITS || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::read;

    fn bodies(stream: &[u8]) -> (Vec<(String, String, bool)>, bool) {
        let reading = read(stream);
        let requests = reading
            .requests
            .iter()
            .map(|r| {
                let body = String::from_utf8_lossy(&r.body).into_owned();
                (r.method.clone(), body, r.complete)
            })
            .collect();
        (requests, reading.whole)
    }

    fn request(method: &str, body: &str) -> (String, String, bool) {
        (method.into(), body.into(), true)
    }

    #[test]
    fn reads_lengths_chunks_and_pipelines() {
        let stream = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
            PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n\
            2;a=b;c=\"d e\"\r\nhi\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n\
            GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let expected = vec![
            request("POST", "abc"),
            request("PUT", "hi!"),
            request("GET", ""),
        ];
        assert_eq!(bodies(stream), (expected, true));
    }

    #[test]
    fn stops_at_what_a_recipient_may_choose() {
        let first = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for second in [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length : 1\r\n\r\n",
            "\r\nGET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\na\r\n0\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let stream = format!("{first}{second}GET / HTTP/1.1\r\n\r\n");
            assert_eq!(
                bodies(stream.as_bytes()),
                (vec![request("GET", "")], false),
                "{second:?}"
            );
        }
    }

    #[test]
    fn a_stream_that_ends_inside_a_body_is_read_to_its_end() {
        let stream = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        let partial = ("POST".into(), "abc".into(), false);
        assert_eq!(bodies(stream), (vec![partial], true));
        let stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab";
        let partial = ("POST".into(), "ab".into(), false);
        assert_eq!(bodies(stream), (vec![partial], true));
    }

    #[test]
    fn nothing_is_read_after_a_request_that_closes() {
        let stream = b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n\
            GET / HTTP/1.1\r\n\r\n";
        assert_eq!(bodies(stream), (vec![request("GET", "")], true));
        let stream = b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(bodies(stream), (vec![request("GET", "")], true));
        let stream = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(bodies(stream).0.len(), 2);
    }
}
