//! The canonical path grammar: what a route prefix or public path must look like, and how a
//! request path is normalised to it.
//!
//! Configuration checks route prefixes and public paths against this grammar (an entry must
//! already be canonical: requests are matched in canonical form), and the canonical request
//! view (`net::canonical`) normalises every request path with it.
//!
//! [`normalize_path`] follows RFC 3986: percent-encoded unreserved characters are decoded,
//! other escapes kept with upper-case hex, dot-segments resolved (encoded ones included,
//! since `%2e` decodes to `.` first) and repeated slashes merged. What cannot be normalised
//! safely is refused rather than guessed at, because an upstream may read it differently:
//! encoded `/` or `\` (policy: refuse or keep opaque), literal backslashes (policy: refuse or
//! treat as `/`), `;` parameters on a dot-segment or on an empty segment (Tomcat and Jetty
//! strip `;…` and would then resolve `..;` as `..`), encoded control bytes, double encoding
//! (`%252e`), malformed escapes, and paths that climb above the root.
//!
//! The invariant (tested by property tests in `tests`): every segment of a canonical path
//! stays one segment, and never a dot-segment, under any resolution an upstream might apply
//! — percent-decoding, `;` stripping, backslash as slash, case folding — so a path the edge
//! calls public stays under its public prefix at the upstream too.

/// Per-listener policy for request paths the edge cannot normalise safely
/// (`escaped_slashes`, `backslash`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathPolicy {
    pub escaped_slashes: EscapedSlashPolicy,
    pub backslash: BackslashPolicy,
}

/// `%2F` / `%5C` in a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EscapedSlashPolicy {
    /// 400 (default).
    #[default]
    Reject,
    /// Kept encoded and opaque: never a separator at the edge. Only for upstreams that do not
    /// decode them either.
    Keep,
}

/// A literal `\` in a path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackslashPolicy {
    /// 400 (default).
    #[default]
    Reject,
    /// Read as `/` (as IIS does) before normalising.
    Slash,
}

/// Longest request path considered (the head cap bounds it too).
pub const MAX_PATH_BYTES: usize = 8192;

/// Why a path was refused (each is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub enum PathRefusal {
    /// Not an absolute path (`*`, empty, no leading `/`).
    NotAbsolute,
    TooLong,
    /// `%` not followed by two hex digits.
    MalformedEscape,
    /// `%2F` or `%5C`.
    EncodedSlash,
    /// A literal `\`.
    Backslash,
    /// A control byte, literal or encoded (`%00`–`%1F`, `%7F`), a literal space, or a byte
    /// above ASCII.
    ControlByte,
    /// `%25` followed by two hex digits: an upstream that decodes twice sees another path.
    DoubleEncoding,
    /// `;` parameters on a dot-segment or an empty segment (`..;`, `.;x`, `/;/`).
    DotSegmentParameters,
    /// More `..` than segments.
    AboveRoot,
}

impl PathRefusal {
    /// Short text for the 400 body and logs.
    pub fn reason(self) -> &'static str {
        match self {
            PathRefusal::NotAbsolute => "request path must start with /",
            PathRefusal::TooLong => "request path too long",
            PathRefusal::MalformedEscape => "malformed percent-escape in path",
            PathRefusal::EncodedSlash => "encoded slash or backslash in path",
            PathRefusal::Backslash => "backslash in path",
            PathRefusal::ControlByte => "control, space or non-ASCII byte in path",
            PathRefusal::DoubleEncoding => "double percent-encoding in path",
            PathRefusal::DotSegmentParameters => "parameters on a dot-segment or empty segment",
            PathRefusal::AboveRoot => "path climbs above the root",
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes what is safe to decode and refuses what is not (first pass of [`normalize_path`]).
fn decode_pass(raw: &[u8], policy: PathPolicy) -> Result<String, PathRefusal> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (raw.get(i + 1).copied().and_then(hex_value), raw.get(i + 2).copied().and_then(hex_value))
                else {
                    return Err(PathRefusal::MalformedEscape);
                };
                let value = hi << 4 | lo;
                match value {
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v if v < 0x20 || v == 0x7f => return Err(PathRefusal::ControlByte),
                    b'/' | b'\\' => match policy.escaped_slashes {
                        EscapedSlashPolicy::Reject => return Err(PathRefusal::EncodedSlash),
                        EscapedSlashPolicy::Keep => push_escape(&mut out, value),
                    },
                    v => push_escape(&mut out, v),
                }
                i += 3;
            }
            b'\\' => match policy.backslash {
                BackslashPolicy::Reject => return Err(PathRefusal::Backslash),
                BackslashPolicy::Slash => {
                    out.push('/');
                    i += 1;
                }
            },
            b if !(0x21..0x7f).contains(&b) => return Err(PathRefusal::ControlByte),
            b => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    // `%25` followed by two hex digits — as sent, or formed by decoding (`%25%34%31`) — is a
    // path an upstream that decodes twice reads differently.
    let bytes = out.as_bytes();
    if bytes.windows(5).any(|w| w.starts_with(b"%25") && w[3].is_ascii_hexdigit() && w[4].is_ascii_hexdigit()) {
        return Err(PathRefusal::DoubleEncoding);
    }
    Ok(out)
}

fn push_escape(out: &mut String, value: u8) {
    out.push('%');
    out.push(char::from(UPPER_HEX[usize::from(value >> 4)]));
    out.push(char::from(UPPER_HEX[usize::from(value & 0xf)]));
}

/// The part of a segment before its `;` parameters (literal `;` or `%3B`), and whether it
/// has any.
fn segment_base(segment: &str) -> (&str, bool) {
    let bytes = segment.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b';' {
            return (&segment[..i], true);
        }
        if *b == b'%' && bytes.get(i + 1) == Some(&b'3') && bytes.get(i + 2).is_some_and(|c| c.eq_ignore_ascii_case(&b'b')) {
            return (&segment[..i], true);
        }
    }
    (segment, false)
}

/// The canonical form of a request path (no query), or why it is refused.
pub fn normalize_path(raw: &str, policy: PathPolicy) -> Result<String, PathRefusal> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathRefusal::TooLong);
    }
    let leading_slash = raw.starts_with('/') || (raw.starts_with('\\') && policy.backslash == BackslashPolicy::Slash);
    if !leading_slash {
        return Err(PathRefusal::NotAbsolute);
    }
    let bytes = raw.as_bytes();
    let plain = bytes.iter().all(|b| (0x21..0x7f).contains(b) && !matches!(b, b'%' | b'\\' | b';'))
        && !bytes.windows(2).any(|w| w[0] == b'/' && matches!(w[1], b'/' | b'.'));
    if plain {
        // Nothing to decode, resolve or merge: already canonical.
        return Ok(raw.to_string());
    }
    let decoded = decode_pass(bytes, policy)?;
    let mut segments: Vec<&str> = Vec::new();
    // Whether the resolved path ends with `/` (a trailing empty, `.` or `..` segment).
    let mut trailing_slash = false;
    let mut parts = decoded.split('/').skip(1).peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        let (base, has_parameters) = segment_base(segment);
        if has_parameters && matches!(base, "" | "." | "..") {
            return Err(PathRefusal::DotSegmentParameters);
        }
        match segment {
            "" => trailing_slash = last,
            "." => trailing_slash = last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathRefusal::AboveRoot);
                }
                trailing_slash = last;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// The canonical `path` with the `;parameters` of every segment removed — how Tomcat and
/// Jetty resolve it — or `None` when it has none. Decisions that depend on the path (route,
/// public prefix) must come out the same on both forms.
pub fn without_parameters(path: &str) -> Option<String> {
    if !path.contains(';') && !path.contains("%3B") {
        return None;
    }
    let segments: Vec<&str> = path.split('/').map(|segment| segment_base(segment).0).collect();
    Some(segments.join("/"))
}

/// Whether `path` starts with `prefix`, folding ASCII case when `fold_case`.
pub fn has_prefix(path: &str, prefix: &str, fold_case: bool) -> bool {
    match path.get(..prefix.len()) {
        Some(head) if fold_case => head.eq_ignore_ascii_case(prefix),
        Some(head) => head == prefix,
        None => false,
    }
}

#[cfg(test)]
mod tests;
