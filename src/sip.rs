//! The SIP federation edge (DESIGN §4): [`message`], the sans-io message layer every SIP
//! connection reads through (bytes in, framed and validated messages or a typed refusal
//! out); [`proxy`], the transaction-stateless proxy core (Via, branch, Max-Forwards, loops,
//! Record-Route/Route, responses by Via); [`edge`], the partner and next-hop connections with
//! the federation policy ([`crate::federation`]) applied; [`registrations`] and [`dialogs`],
//! the counts the status shows.

pub mod dialogs;
pub mod edge;
pub mod message;
pub mod proxy;
pub mod registrations;
