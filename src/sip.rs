//! The SIP federation edge (DESIGN §4), built up in steps. Today, both sans-io: [`message`],
//! the message layer every SIP connection will read through (bytes in, framed and validated
//! messages or a typed refusal out), and [`proxy`], the transaction-stateless proxy core
//! (Via, branch, Max-Forwards, loops, Record-Route/Route, responses by Via). The listeners,
//! the transport and the federation policy come next (issue 12); `[[sip.listener]]` is
//! refused at start until then.

pub mod edge;
pub mod message;
pub mod policy;
pub mod proxy;
pub mod registrations;
pub mod route;
