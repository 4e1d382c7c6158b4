//! SIP messages off a stream (TCP or TLS), sans-io: bytes in → framed, validated messages, or
//! a typed refusal that says which answer to send and whether the connection can go on.
//!
//! Framing and parsing are `sipx-sip`'s (RFC 3261 grammar incl. compact names, folding and
//! comma-joined Via; RFC 4475-tested; every limit checked before allocating), wrapped here so
//! the rest of the edge never depends on its types or on its choices:
//! - a stream message **must** carry `Content-Length` (RFC 3261 §18.3); a message above
//!   `max_message_bytes` is refused with 513 (RFC 3261 §21.5.14) and the connection closed;
//! - any framing or syntax error is 400 and closes the connection: framing is lost, and
//!   guessing where the next message starts is how a body becomes a request;
//! - a message that frames but lacks what RFC 3261 §8.1.1 requires (Via, From, To, Call-ID,
//!   CSeq matching the method), repeats a single-value header, or carries headers in its
//!   Request-URI is refused (400; 505 for another SIP version), and the connection goes on;
//!   a missing `Max-Forwards` is the one thing a proxy may repair (RFC 3261 §16.6), so it
//!   passes; a control byte in a header value (NUL, ESC, DEL) is refused the same way;
//! - CRLF keep-alives between messages (RFC 5626 §4.4.1: CRLFCRLF ping, CRLF pong) are
//!   reported so the transport can answer a ping.

use std::borrow::Cow;

use bytes::Bytes;
use sipx_sip::error::HeaderError;
use sipx_sip::error::{LimitKind, ParseError};
use sipx_sip::headers::{CSeq, CallId, From, MaxForwards, To, Via};
use sipx_sip::message::Message;
use sipx_sip::name::HeaderName;
use sipx_sip::parser::{Limits, StreamParser};
use sipx_sip::validate::Finding;

/// Bounds on one SIP connection's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Largest message, head and body (`[sip] max_message_bytes`).
    pub max_message_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest header field, folding included.
    pub max_header_bytes: usize,
}

impl StreamLimits {
    /// The limits for `max_message_bytes`, with 256 header fields of at most 8 KiB.
    pub fn new(max_message_bytes: usize) -> StreamLimits {
        StreamLimits { max_message_bytes, max_headers: 256, max_header_bytes: 8 * 1024 }
    }
}

/// Why a message (or the stream) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Above a size limit: 513, and the connection is closed.
    #[error("message too large: {0}")]
    TooLarge(String),
    /// Framing or syntax lost: 400, and the connection is closed.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Framed, but not a message the edge may act on: 400 (505 for another version); the
    /// connection goes on.
    #[error("invalid message: {reason}")]
    Invalid { status: u16, reason: String },
}

impl Refusal {
    /// The SIP status to answer with (when an answer can be sent).
    pub fn status(&self) -> u16 {
        match self {
            Refusal::TooLarge(_) => 513,
            Refusal::Malformed(_) => 400,
            Refusal::Invalid { status, .. } => *status,
        }
    }

    /// Whether the connection must be closed (its framing cannot be trusted any more).
    pub fn closes_connection(&self) -> bool {
        !matches!(self, Refusal::Invalid { .. })
    }
}

/// What a connection's bytes became, in order.
#[derive(Debug)]
pub enum Frame {
    /// A framed, validated message.
    Message(Box<SipMessage>),
    /// A message that framed but may not be acted on (the connection goes on).
    Refused(Refusal),
}

/// Frames and validates the messages of one stream.
#[derive(Debug)]
pub struct Framer {
    parser: StreamParser,
}

impl Framer {
    /// A framer for a new connection.
    pub fn new(limits: StreamLimits) -> Framer {
        Framer {
            parser: StreamParser::new(Limits {
                max_message_bytes: limits.max_message_bytes,
                max_body_bytes: limits.max_message_bytes,
                max_headers: limits.max_headers,
                max_header_bytes: limits.max_header_bytes,
                max_folding_lines: 16,
            }),
        }
    }

    /// Feeds `bytes`; every message they completed, in order. An `Err` ends the connection
    /// (and every later call returns an error too).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, Refusal> {
        let messages = self.parser.push(bytes).map_err(refusal_of)?;
        Ok(messages.into_iter().map(checked).collect())
    }

    /// CRLF pairs seen between messages since the last call: 2 or more is a keep-alive ping
    /// (answer CRLF), 1 a pong.
    pub fn take_keepalives(&mut self) -> usize {
        self.parser.take_keepalives()
    }

    /// Bytes of an unfinished message held (a transport times out a peer that stops midway).
    pub fn pending(&self) -> usize {
        self.parser.pending()
    }
}

fn refusal_of(error: ParseError) -> Refusal {
    match error {
        ParseError::Limit { limit: LimitKind::MessageBytes | LimitKind::BodyBytes, .. } => Refusal::TooLarge(error.to_string()),
        other => Refusal::Malformed(other.to_string()),
    }
}

fn checked(message: sipx_sip::message::Message) -> Frame {
    // Control bytes (NUL, CR, ESC, DEL …) have no place in a header value (RFC 3261 §25.1
    // TEXT-UTF8); an internal SIP server may cut a value at a NUL and read the rest differently.
    // Checked on the unfolded value: the CRLF of a fold (RFC 3261 §7.3.1, which the parser
    // has already checked is followed by whitespace) is line folding, not a control byte.
    if message.headers().iter().any(|h| has_control_byte(h.raw_value())) {
        return Frame::Refused(Refusal::Invalid { status: 400, reason: "control character in a header value".to_string() });
    }
    let (findings, partner) = validate(&message);
    let findings: Vec<Finding> = findings.into_iter().filter(|f| !f.is_repairable()).collect();
    match findings.first() {
        None => Frame::Message(Box::new(SipMessage(message, partner))),
        Some(first) => Frame::Refused(Refusal::Invalid { status: first.status(), reason: describe(&findings) }),
    }
}

/// RFC 3261 §8.1.1: the checks of `sipx_sip::validate`, in its order and with its findings,
/// each field parsed once; and the partner domain read from the From it parsed (see
/// [`SipMessage::from_host`]).
fn validate(message: &Message) -> (Vec<Finding>, Option<String>) {
    let mut out = Vec::new();
    let (headers, request) = match message {
        Message::Request(request) => (&request.headers, Some(request)),
        Message::Response(response) => (&response.headers, None),
    };
    let supported = match message {
        Message::Request(request) => request.version.is_supported(),
        Message::Response(response) => response.version.is_supported(),
    };
    if !supported {
        out.push(Finding::UnsupportedVersion);
    }
    if request.is_some_and(|request| request.uri.has_headers()) {
        out.push(Finding::RequestUriHasHeaders);
    }
    required(headers.typed::<To>(), "To", &mut out);
    let from = headers.typed::<From>();
    let partner = match &from {
        Some(Ok(from)) => partner_domain(from),
        _ => None,
    };
    required(from, "From", &mut out);
    required(headers.typed::<CallId>(), "Call-ID", &mut out);
    let cseq = headers.typed::<CSeq>();
    // The CSeq method must name the request line's (a forgery or a bug otherwise).
    let mismatch = matches!((&cseq, request), (Some(Ok(cseq)), Some(request)) if cseq.method != request.method);
    required(cseq, "CSeq", &mut out);
    if request.is_some() {
        required(headers.typed::<MaxForwards>(), "Max-Forwards", &mut out);
    }
    required(headers.typed::<Via>(), "Via", &mut out);
    let mut counts = [0usize; 5];
    for header in headers.iter() {
        let slot = match header.name() {
            HeaderName::To => 0,
            HeaderName::From => 1,
            HeaderName::CallId => 2,
            HeaderName::CSeq => 3,
            HeaderName::MaxForwards => 4,
            _ => continue,
        };
        if let Some(count) = counts.get_mut(slot) {
            *count += 1;
        }
    }
    // Max-Forwards is single-valued in requests (a response has none to check).
    let single = if request.is_some() { 5 } else { 4 };
    for (count, label) in counts.iter().zip(["To", "From", "Call-ID", "CSeq", "Max-Forwards"]).take(single) {
        if *count > 1 {
            out.push(Finding::RepeatedSingleValueHeader(label));
        }
    }
    if mismatch {
        out.push(Finding::CSeqMethodMismatch);
    }
    (out, partner)
}

fn required<H>(parsed: Option<Result<H, HeaderError>>, label: &'static str, out: &mut Vec<Finding>) {
    match parsed {
        None => out.push(Finding::MissingRequiredHeader(label)),
        Some(Err(_)) => out.push(Finding::MalformedRequiredHeader(label)),
        Some(Ok(_)) => {}
    }
}

/// The host of a From URI as the URI grammar reads it, lower case, without a trailing dot, an
/// IPv6 address without brackets; `None` when it is not a `sip:`/`sips:` URI.
fn partner_domain(from: &From) -> Option<String> {
    if !from.uri.scheme().is_sip() {
        return None;
    }
    let host = match from.uri.host()? {
        sipx_sip::uri::Host::Name(name) => String::from_utf8_lossy(name.as_bytes()).trim_end_matches('.').to_ascii_lowercase(),
        sipx_sip::uri::Host::Ip(ip) => ip.to_canonical().to_string(),
    };
    (!host.is_empty()).then_some(host)
}

/// Whether a header value as written holds a control byte other than HT, the CRLF of a fold
/// (CRLF followed by SP or HT) excepted — the same verdict as on the unfolded value, in one pass
/// and without unfolding.
fn has_control_byte(raw: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'\r' && raw.get(i + 1) == Some(&b'\n') && matches!(raw.get(i + 2), Some(b' ' | b'\t')) {
            i += 3;
            continue;
        }
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            return true;
        }
        i += 1;
    }
    false
}

fn describe(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|finding| match finding {
            Finding::MissingRequiredHeader(name) => format!("missing {name}"),
            Finding::MalformedRequiredHeader(name) => format!("malformed {name}"),
            Finding::RepeatedSingleValueHeader(name) => format!("{name} repeated"),
            Finding::CSeqMethodMismatch => "CSeq method differs from the request line".to_string(),
            Finding::UnsupportedVersion => "unsupported SIP version".to_string(),
            Finding::RequestUriHasHeaders => "headers in the Request-URI".to_string(),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One framed, validated SIP message (the parser's model stays behind this type). Header
/// fields read from the wire keep their exact bytes; an edit replaces one field where it stands
/// and the rest goes out as it came in.
#[derive(Debug)]
pub struct SipMessage(Message, Option<String>);

impl SipMessage {
    /// Whether it is a request (else a response).
    pub fn is_request(&self) -> bool {
        self.0.as_request().is_some()
    }

    /// The request's method (`INVITE`, `MESSAGE`, …); `None` for a response.
    pub fn method(&self) -> Option<String> {
        self.method_name().map(str::to_string)
    }

    /// The request's method, borrowed; `None` for a response.
    pub fn method_name(&self) -> Option<&str> {
        self.0.as_request().and_then(|request| std::str::from_utf8(request.method.as_bytes()).ok())
    }

    /// The response's status code; `None` for a request.
    pub fn status(&self) -> Option<u16> {
        self.0.as_response().map(|response| response.status.code())
    }

    /// The first value of header `name` (full or compact name), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_value(name).map(Cow::into_owned)
    }

    /// The first value of header `name`, unfolded and trimmed, borrowed when it was not folded.
    pub fn header_value(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0.headers().get(&header_name(name)).map(|h| text(h.value()))
    }

    /// How many fields named `name` it has.
    pub fn count(&self, name: &str) -> usize {
        self.0.headers().count(&header_name(name))
    }

    /// Every field named `name`, in order, each value as written (a field may hold several
    /// comma-separated values).
    pub fn fields(&self, name: &str) -> Vec<String> {
        self.field_values(name).map(Cow::into_owned).collect()
    }

    /// [`SipMessage::fields`], borrowed.
    pub fn field_values(&self, name: &str) -> impl Iterator<Item = Cow<'_, str>> {
        let name = header_name(name);
        self.0.headers().iter().filter(move |h| *h.name() == name).map(|h| text(h.value()))
    }

    /// Puts a field `name: value` first among the headers.
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) -> Result<(), Refusal> {
        let header = build(name, value.into())?;
        self.0.headers_mut().push_front(header);
        Ok(())
    }

    /// Removes the first field named `name`; whether there was one.
    pub fn remove_first(&mut self, name: &str) -> bool {
        self.0.headers_mut().remove_first(&header_name(name)).is_some()
    }

    /// Replaces the first field named `name` where it stands (put first among all headers when
    /// there is none).
    pub fn replace_first(&mut self, name: &str, value: impl Into<String>) -> Result<(), Refusal> {
        let header = build(name, value.into())?;
        let headers = self.0.headers_mut();
        let index = headers.iter().position(|h| h.name() == header.name());
        match index {
            Some(index) => {
                headers.remove_first(header.name());
                headers.insert(index, header);
            }
            None => headers.push_front(header),
        }
        Ok(())
    }

    /// Puts a field `name: value` right after the first field named `name`.
    pub fn insert_after_first(&mut self, name: &str, value: impl Into<String>) -> Result<(), Refusal> {
        let header = build(name, value.into())?;
        let headers = self.0.headers_mut();
        let index = headers.iter().position(|h| h.name() == header.name()).map_or(0, |i| i + 1);
        headers.insert(index, header);
        Ok(())
    }

    /// The partner domain: the host of the From URI as the URI grammar reads it (the same
    /// parse the validation passed and the next hop makes — never a search of the text, which a
    /// display name or a parameter holding `sip:…@other` would fool), lower case, without a
    /// trailing dot (`example.com.` is `example.com`), an IPv6 address without brackets;
    /// `None` when From is not a `sip:`/`sips:` URI.
    ///
    /// Read once, when the message was validated (the edge never changes From).
    pub fn from_host(&self) -> Option<&str> {
        self.1.as_deref()
    }

    /// The Request-URI as written (requests only).
    pub fn request_uri(&self) -> Option<String> {
        self.0.as_request().map(|request| request.uri.to_string())
    }

    /// Appends the Request-URI as written to `out` (nothing for a response).
    pub fn write_request_uri(&self, out: &mut Vec<u8>) {
        if let Some(request) = self.0.as_request() {
            request.uri.write_to(out);
        }
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        self.0.body()
    }

    /// Its bytes as they go on the wire (one allocation of the right size).
    pub fn to_bytes(&self) -> Bytes {
        let headers: usize = self.0.headers().iter().map(|h| h.name().canonical().len() + h.raw_value().len() + 8).sum();
        let mut out = Vec::with_capacity(START_LINE_ROOM + headers + self.0.body().len());
        self.0.write_to(&mut out);
        Bytes::from(out)
    }
}

/// Room for a start line in [`SipMessage::to_bytes`]'s first guess (more is a reallocation).
const START_LINE_ROOM: usize = 256;

/// A header value as text (a value is `TEXT-UTF8`, RFC 3261 §25.1; anything else is shown
/// lossily, never trusted).
fn text(value: Cow<'_, [u8]>) -> Cow<'_, str> {
    match value {
        // The strict check first: it is the common case, and much faster than the lossy one.
        Cow::Borrowed(bytes) => std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), Cow::Borrowed),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

fn build(name: &str, value: String) -> Result<sipx_sip::message::Header, Refusal> {
    sipx_sip::message::Header::build(header_name(name), Bytes::from(value)).map_err(|e| Refusal::Malformed(e.to_string()))
}

/// The parser's name for `name`: the ones the edge asks for on every message without an
/// allocation, any other through the parser's own lookup (full or compact, any case).
fn header_name(name: &str) -> HeaderName {
    match name {
        "Via" => HeaderName::Via,
        "From" => HeaderName::From,
        "To" => HeaderName::To,
        "Call-ID" => HeaderName::CallId,
        "CSeq" => HeaderName::CSeq,
        "Max-Forwards" => HeaderName::MaxForwards,
        "Route" => HeaderName::Route,
        "Record-Route" => HeaderName::RecordRoute,
        "Contact" => HeaderName::Contact,
        "Expires" => HeaderName::Expires,
        other => HeaderName::parse(&Bytes::copy_from_slice(other.as_bytes())),
    }
}

/// The URI of a name-addr or addr-spec field value (`"Bob" <sip:bob@x;transport=tcp>;tag=1`
/// → `sip:bob@x;transport=tcp`; `sip:bob@x;tag=1` → `sip:bob@x`), trimmed.
pub fn addr_spec(value: &str) -> &str {
    let value = value.trim();
    match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => value[open + 1..close].trim(),
        _ => value.split(';').next().unwrap_or_default().trim(),
    }
}

#[cfg(test)]
mod tests;
