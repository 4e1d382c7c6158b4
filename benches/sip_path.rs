//! Cost of the SIP edge's per-message work without the network: one MESSAGE framed, checked,
//! its partner domain read and prepared for forwarding, then its 200 framed, routed back by
//! Via and serialised — what `SipEdge` does per transaction of the bench's `message` workload.
//! Run: `cargo bench --bench sip_path` (prints µs per message; allocations: count `malloc`
//! calls with a uprobe, e.g. `perf probe -x libc.so.6 malloc` + `perf stat -e probe_libc:malloc`).

#![allow(clippy::disallowed_types, reason = "wall-clock timing is the point of a benchmark")]
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark harness")]

use std::time::Instant;

use portcullis::sip::message::{Frame, Framer, StreamLimits};
use portcullis::sip::proxy::{self, Hop, Transport};

fn request(n: u64) -> Vec<u8> {
    let body = format!("hello {n}\r\n");
    format!(
        "MESSAGE sip:service@edge.lab.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK-1234-{n}-0\r\n\
         From: <sip:sipp@partner.allowed.test>;tag=1234SIPpTag00{n}\r\nTo: <sip:service@edge.lab.test>\r\n\
         Call-ID: {n}-1234@127.0.0.1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn response(forwarded: &[u8], n: u64) -> Vec<u8> {
    let text = std::str::from_utf8(forwarded).unwrap();
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in text.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap();
        if ["Via", "From", "Call-ID", "CSeq"].contains(&name) {
            out.push_str(line);
            out.push_str("\r\n");
        } else if name == "To" {
            out.push_str(&format!("{line};tag=1234SIPpTag01{n}\r\n"));
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

fn main() {
    let hop = Hop { host: "127.0.0.1".into(), port: 5060, transport: Transport::Tcp };
    let source = "127.0.0.1:5062".parse().unwrap();
    let limits = StreamLimits::new(65536);
    let (mut partner, mut upstream) = (Framer::new(limits), Framer::new(limits));
    let rounds = 20_000u64;
    let inputs: Vec<Vec<u8>> = (0..rounds).map(request).collect();
    let mut forwarded = Vec::new();
    let start = Instant::now();
    for (n, bytes) in inputs.iter().enumerate() {
        let Some(Frame::Message(mut message)) = partner.push(bytes).unwrap().pop() else { panic!() };
        assert!(message.from_host().is_some());
        proxy::forward_request(&mut message, &hop, source, 7, true).unwrap();
        let out = message.to_bytes();
        if n == 0 {
            forwarded = out.to_vec();
        }
        std::hint::black_box(out);
    }
    let request_time = start.elapsed();
    let responses: Vec<Vec<u8>> = (0..rounds).map(|n| response(&forwarded, n)).collect();
    let start = Instant::now();
    for bytes in &responses {
        let Some(Frame::Message(mut message)) = upstream.push(bytes).unwrap().pop() else { panic!() };
        let target = proxy::return_response(&mut message, &hop).unwrap();
        std::hint::black_box((target, message.status(), message.header("CSeq"), message.to_bytes()));
    }
    let response_time = start.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / rounds as f64;
    println!("request  (frame, check, from host, forward, serialise): {:.2} µs", per(request_time));
    println!("response (frame, check, return by Via, serialise):      {:.2} µs", per(response_time));
}
