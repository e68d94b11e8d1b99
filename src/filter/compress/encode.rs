//! The compressing body: it encodes frames as they arrive and never holds the whole body.
//! Output leaves in pieces of up to `CHUNK` bytes; whenever the source has nothing more to
//! give right now, what is encoded so far is flushed, so a slow stream reaches the client
//! as it comes (compressed), not at its end.

use super::negotiate::Algorithm;
use crate::body::{Body, BoxError};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use prometheus_client::metrics::counter::Counter;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Encoded bytes are sent once this many have gathered.
const CHUNK: usize = 16 << 10;

/// Compression levels, per algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Levels {
    pub(crate) gzip: u32,
    pub(crate) brotli: u32,
    pub(crate) zstd: i32,
}

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(algorithm: Algorithm, levels: Levels) -> std::io::Result<Encoder> {
        Ok(match algorithm {
            Algorithm::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip),
            )),
            // 4 KiB internal buffer, window 2^22 (the brotli command line's default).
            Algorithm::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                levels.brotli,
                22,
            ))),
            Algorithm::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(
                Vec::new(),
                levels.zstd,
            )?),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Gzip(e) => e,
            Encoder::Brotli(e) => e.as_mut(),
            Encoder::Zstd(e) => e,
        }
    }

    /// The encoded bytes so far, taken.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        })
    }

    fn buffered(&mut self) -> usize {
        match self {
            Encoder::Gzip(e) => e.get_ref().len(),
            Encoder::Brotli(e) => e.get_ref().len(),
            Encoder::Zstd(e) => e.get_ref().len(),
        }
    }

    /// Ends the stream; the last encoded bytes.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// Bytes in and out of one algorithm, for metrics.
#[derive(Clone)]
pub(crate) struct Tally {
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
}

pub(crate) struct Encoding {
    inner: Body,
    /// `None` once finished.
    encoder: Option<Encoder>,
    /// Input written since the last flush.
    unflushed: bool,
    trailers: Option<HeaderMap>,
    tally: Tally,
}

impl Encoding {
    /// An encoder ready for a body (see [`Encoding::wrap`]).
    pub(crate) fn new(algorithm: Algorithm, levels: Levels, tally: Tally) -> std::io::Result<Encoding> {
        Ok(Encoding {
            inner: Body::Empty,
            encoder: Some(Encoder::new(algorithm, levels)?),
            unflushed: false,
            trailers: None,
            tally,
        })
    }

    /// Encodes `body`.
    pub(crate) fn wrap(mut self, body: Body) -> Encoding {
        self.inner = body;
        self
    }

    fn out(&self, bytes: Vec<u8>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.tally.bytes_out.inc_by(bytes.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))))
    }
}

impl HttpBody for Encoding {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.tally.bytes_in.inc_by(data.len() as u64);
                        encoder.writer().write_all(&data)?;
                        this.unflushed = true;
                        if encoder.buffered() >= CHUNK {
                            let bytes = encoder.take();
                            return this.out(bytes);
                        }
                    }
                    Err(frame) => {
                        // Trailers end the data: finish, then send them.
                        this.trailers = frame.into_trailers().ok();
                        let last = this.encoder.take().map(Encoder::finish).transpose()?;
                        if let Some(last) = last.filter(|l| !l.is_empty()) {
                            return this.out(last);
                        }
                    }
                },
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => {
                    // Never an empty data frame: in a chunked message it would read as the end.
                    let last = this.encoder.take().map(Encoder::finish).transpose()?;
                    if let Some(last) = last.filter(|l| !l.is_empty()) {
                        return this.out(last);
                    }
                }
                Poll::Pending => {
                    if this.unflushed {
                        encoder.writer().flush()?;
                        this.unflushed = false;
                    }
                    if encoder.buffered() > 0 {
                        let bytes = encoder.take();
                        return this.out(bytes);
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }
}
