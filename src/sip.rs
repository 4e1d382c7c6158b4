//! The SIP federation edge (DESIGN §4), built up in steps. Today: [`message`], the sans-io
//! message layer every SIP connection will read through — bytes in, framed and validated
//! messages or a typed refusal out, no I/O. The listeners, the stateless proxy and the
//! federation policy come next (issue 12); `[[sip.listener]]` is refused at start until then.

pub mod message;
