//! An incremental Server-Sent Events parser and the stream that turns SSE bytes into chat chunks.
//!
//! The parser follows the WHATWG event-stream rules that matter for LLM APIs: lines end in
//! `\n`, `\r\n` or `\r` (even when a `\r\n` pair is split across two reads), a leading BOM is
//! dropped, `:` lines are comments, several `data:` lines join with `\n`, one space after the
//! colon is removed, and an event is dispatched at a blank line. Bytes may be split anywhere,
//! including inside a UTF-8 sequence. An event larger than [`MAX_EVENT_BYTES`] is an error, so a
//! hostile upstream cannot grow memory without bound.

use core::pin::Pin;
use core::task::{Context, Poll};
use std::collections::VecDeque;

use bytes::Bytes;
use echelon_domain::chat::StreamChunk;
use echelon_domain::error::{ErrorClass, UpstreamError};
use futures_core::Stream;

/// Largest accepted event (all its lines together), in bytes.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Why the byte stream is not a valid event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line or event exceeded [`MAX_EVENT_BYTES`].
    #[error("event stream line or event longer than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    /// A field value was not UTF-8.
    #[error("event stream is not valid utf-8")]
    NotUtf8,
}

/// The incremental parser: feed it bytes as they come, take events out.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous byte ended a line with `\r`; a `\n` right after it belongs to that line end.
    after_cr: bool,
    /// Whether the stream's first bytes have been seen (for the BOM rule).
    started: bool,
    event: Option<String>,
    data: String,
    /// Whether any `data` field was seen for the current event.
    has_data: bool,
    ready: VecDeque<SseEvent>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes; complete events become available through [`Self::next_event`].
    ///
    /// # Errors
    ///
    /// When a line or event grows past [`MAX_EVENT_BYTES`] or a field is not UTF-8. The parser
    /// must not be used after an error.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), SseError> {
        if !self.started && !bytes.is_empty() {
            // The BOM may itself be split; hold back a prefix of it until it is complete.
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let have = self.line.len();
            let take = (BOM.len() - have).min(bytes.len());
            if BOM[have..have + take] == bytes[..take] {
                self.line.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.line.len() < BOM.len() {
                    return Ok(());
                }
                self.line.clear();
            }
            // Otherwise it was not a BOM after all: held bytes stay as ordinary line content.
            self.started = true;
        }
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.push_line_bytes(&bytes[..end])?;
                    self.after_cr = bytes[end] == b'\r';
                    bytes = &bytes[end + 1..];
                    self.finish_line()?;
                }
                None => {
                    self.push_line_bytes(bytes)?;
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    /// The next complete event, if one is ready.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Whether bytes of an unfinished event are pending (the stream was cut inside an event).
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.event.is_some()
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + bytes.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn finish_line(&mut self) -> Result<(), SseError> {
        if self.line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        let line = core::mem::take(&mut self.line);
        let result = self.process_field(&line);
        // Keep the allocation for the next line.
        self.line = line;
        self.line.clear();
        result
    }

    fn process_field(&mut self, line: &[u8]) -> Result<(), SseError> {
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                let value = core::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => {
                let value = core::str::from_utf8(value).map_err(|_| SseError::NotUtf8)?;
                self.event = Some(value.to_owned());
            }
            // `id` and `retry` steer browser reconnection, which an upstream client never does;
            // unknown fields are ignored as the standard says.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        let event = self.event.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        self.ready.push_back(SseEvent {
            event: event.filter(|e| !e.is_empty()),
            data: core::mem::take(&mut self.data),
        });
    }
}

/// What a protocol decoder makes of one event.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing for the caller (a ping, a bookkeeping event).
    Skip,
    /// A chunk for the caller.
    Emit(StreamChunk),
    /// The protocol's end marker, with the last chunks (held back until the end was certain).
    End(Vec<StreamChunk>),
}

/// A provider's streaming protocol: SSE events in, chat chunks out.
pub(crate) trait EventDecoder: Send + Unpin + 'static {
    /// Decodes one event.
    fn on_event(&mut self, event: SseEvent) -> Result<Step, UpstreamError>;

    /// The byte stream ended without the protocol's end marker. Returns the last chunk when the
    /// protocol allows a bare end (Gemini after a finish reason), or the error that says the
    /// stream was cut.
    fn on_eof(&mut self) -> Result<Vec<StreamChunk>, UpstreamError>;
}

/// The error for a stream that ended before its protocol said it was complete.
pub(crate) fn cut_error(what: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorClass::Connect,
        format!("upstream stream ended before {what}: the answer is incomplete"),
    )
}

/// The error for a chunk that is not what the protocol promises.
pub(crate) fn malformed_error(detail: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorClass::Connect,
        format!("malformed upstream stream chunk: {detail}"),
    )
}

/// A boxed stream of body bytes whose errors are already classified.
pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

/// Turns a body of SSE bytes into chat chunks through a protocol decoder.
///
/// The stream ends after the protocol's end marker, or with exactly one `Err` item: a transport
/// error, a malformed event, an upstream error event, or a cut (end of bytes before the end
/// marker). It never ends cleanly without the end marker.
pub(crate) struct SseChunkStream<D> {
    body: ByteStream,
    parser: SseParser,
    decoder: D,
    out: VecDeque<Result<StreamChunk, UpstreamError>>,
    finished: bool,
}

impl<D: EventDecoder> SseChunkStream<D> {
    pub(crate) fn new(body: ByteStream, decoder: D) -> Self {
        Self {
            body,
            parser: SseParser::new(),
            decoder,
            out: VecDeque::new(),
            finished: false,
        }
    }

    /// Runs the decoder over every event the parser has ready.
    fn drain_events(&mut self) {
        while let Some(event) = self.parser.next_event() {
            match self.decoder.on_event(event) {
                Ok(Step::Skip) => {}
                Ok(Step::Emit(chunk)) => self.out.push_back(Ok(chunk)),
                Ok(Step::End(last)) => {
                    self.out.extend(last.into_iter().map(Ok));
                    self.finished = true;
                    return;
                }
                Err(e) => {
                    self.out.push_back(Err(e));
                    self.finished = true;
                    return;
                }
            }
        }
    }
}

impl<D: EventDecoder + Unpin> Stream for SseChunkStream<D> {
    type Item = Result<StreamChunk, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.out.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    if let Err(e) = this.parser.feed(&bytes) {
                        this.out.push_back(Err(malformed_error(&e.to_string())));
                        this.finished = true;
                    } else {
                        this.drain_events();
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.out.push_back(Err(e));
                    this.finished = true;
                }
                Poll::Ready(None) => {
                    // A last event without its closing blank line is still a cut: the standard
                    // discards it, and so do we.
                    match this.decoder.on_eof() {
                        Ok(last) => this.out.extend(last.into_iter().map(Ok)),
                        Err(e) => this.out.push_back(Err(e)),
                    }
                    this.finished = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], split: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        for piece in input.chunks(split.max(1)) {
            parser.feed(piece).unwrap();
        }
        let mut events = Vec::new();
        while let Some(e) = parser.next_event() {
            events.push(e);
        }
        events
    }

    #[test]
    fn same_events_whatever_the_read_boundaries() {
        let input = "\u{FEFF}: comment\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\n\
                     data: line one\ndata:line two\n\n\
                     data: é ü\r\rid: 7\nretry: 10\ndata\n\n";
        let expected = vec![
            SseEvent {
                event: Some("message_start".into()),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: None,
                data: "line one\nline two".into(),
            },
            SseEvent {
                event: None,
                data: "é ü".into(),
            },
            SseEvent {
                event: None,
                data: String::new(),
            },
        ];
        for split in 1..input.len() {
            assert_eq!(
                parse_all(input.as_bytes(), split),
                expected,
                "split {split}"
            );
        }
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_resets_type() {
        let events = parse_all(b"event: ping\n\ndata: x\n\n", 64);
        assert_eq!(
            events,
            vec![SseEvent {
                event: None,
                data: "x".into()
            }]
        );
    }

    #[test]
    fn cut_inside_an_event_is_visible() {
        let mut parser = SseParser::new();
        parser.feed(b"data: {\"partial\"").unwrap();
        assert!(parser.next_event().is_none());
        assert!(parser.has_partial_event());
    }

    #[test]
    fn oversized_and_invalid_input_are_errors() {
        let mut parser = SseParser::new();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert_eq!(parser.feed(&big), Err(SseError::TooLarge));
        let mut parser = SseParser::new();
        assert_eq!(parser.feed(b"data: \xFF\xFE\n\n"), Err(SseError::NotUtf8));
    }

    #[test]
    fn bom_lookalike_prefix_is_kept() {
        assert_eq!(
            parse_all(b"\xEF\xBBdata: x\n\n", 1).len(),
            0,
            "a broken BOM makes the first line an unknown field"
        );
        assert_eq!(parse_all(b"data: x\n\n", 1)[0].data, "x");
    }
}
