//! The SIP federation edge (DESIGN §4), built up in steps (issue 12): [`message`], the
//! message layer every SIP connection reads through (bytes in, framed and validated messages
//! or a typed refusal out); [`proxy`], the transaction-stateless proxy core (Via, branch,
//! Max-Forwards, loops, Record-Route/Route, responses by Via); [`route`], where a request from
//! the inside goes (Route, Request-URI, partner domain); [`policy`], the federation lists and
//! throttle; [`registrations`]; and [`edge`], the front end on the network (partner
//! connections, the next hop over TCP or TLS, requests from the inside toward partners).

pub mod edge;
pub mod message;
pub mod policy;
pub mod proxy;
pub mod registrations;
pub mod route;
