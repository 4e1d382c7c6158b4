//! The SIP federation edge (DESIGN §4): [`message`], the sans-io message layer every SIP
//! connection reads through (bytes in, framed and validated messages or a typed refusal
//! out); [`proxy`], the transaction-stateless proxy core (Via, branch, Max-Forwards, loops,
//! Record-Route/Route, responses by Via); [`route`], where a request from the inside goes
//! (Route, Request-URI, partner domain); [`edge`], the front end on the network (partner
//! connections with the federation policy of [`crate::federation`] applied, the next hop
//! over TCP or TLS, requests from the inside toward partners); [`registrations`] and
//! [`dialogs`], the counts the status shows.

pub mod dialogs;
pub mod edge;
pub mod message;
pub mod proxy;
pub mod registrations;
pub mod route;
