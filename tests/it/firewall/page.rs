//! The status page's Firewall section in a real headless Chromium (`support::browser`) run
//! inside the lab's edge namespace, where the admin API listens, with the real firewall in
//! that namespace's kernel: the section names the table, the interface and the open port, its
//! counters are the kernel's and move with dropped packets, and it follows the firewall taken
//! down and put back through the admin API. Skipped like the other firewall tests (root,
//! `nft`, scapy) and like the browser test (chromium, chromedriver).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{ADMIN_TOKEN, CLIENT4, EDGE4, Lab, PORT, TABLE, can_run, write_config};
use crate::support::browser::Driver;

const PAGE: &str = "http://127.0.0.1:18181/";

/// The page's counter table as shown: counter name → packets (the header row left out).
async fn shown_counters(driver: &Driver) -> BTreeMap<String, u64> {
    let table = driver.text("#firewall-counters").await;
    let mut rows = table.lines();
    assert_eq!(rows.next().map(str::split_whitespace).map(Iterator::collect::<Vec<_>>), Some(vec!["counter", "packets"]), "{table}");
    rows.map(|row| match row.split_whitespace().collect::<Vec<_>>()[..] {
        [name, packets] => (name.to_string(), packets.parse().unwrap_or_else(|_| panic!("row {row:?} of {table}"))),
        _ => panic!("row {row:?} of {table}"),
    })
    .collect()
}

/// Reloads the page and reads its counters between two readings of the kernel's
/// (`nft -j list counters`): the page lists every counter, each at least what the kernel had
/// counted before the reload and at most what it had counted after.
async fn reload_counters(lab: &Lab, driver: &Driver) -> BTreeMap<String, u64> {
    let before = lab.counters();
    driver.open(PAGE).await;
    let shown = shown_counters(driver).await;
    let after = lab.counters();
    // The ownership mark counts nothing and is not shown.
    let mut kernel: Vec<&String> = after.keys().filter(|name| *name != "portcullis_owned").collect();
    kernel.sort();
    assert_eq!(shown.keys().collect::<Vec<_>>(), kernel, "the page lists the kernel's counters");
    for (name, packets) in &shown {
        assert!(
            (before[name]..=after[name]).contains(packets),
            "{name}: the page shows {packets}, the kernel counted {} before the reload and {} after",
            before[name],
            after[name]
        );
    }
    shown
}

/// `POST /api/v1/firewall/<action>` from inside the edge's namespace; the view it answers.
fn firewall(lab: &Lab, action: &str) -> Value {
    let out = lab.edge(&[
        "curl",
        "-sf",
        "-m",
        "20",
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        &format!("http://127.0.0.1:18181/api/v1/firewall/{action}"),
    ]);
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_status_page_shows_the_firewall_its_kernel_counters_and_its_removal() {
    if !can_run() || !Driver::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut lab = Lab::create();
    lab.start_edge(&config);
    // Declared after the lab: dropped (chromedriver and chromium killed) before it.
    let Some(driver) = Driver::start_in_netns(&lab.edge_ns).await else { return };

    driver.open(PAGE).await;
    driver.type_into("#token", ADMIN_TOKEN).await;
    driver.click("#sign-in").await;
    assert_eq!(driver.text_becomes("#firewall", "applied").await, "applied");
    let about = format!("table inet {TABLE} on veth-e, open ports {PORT}");
    assert_eq!(driver.text("p:has(> #firewall-ports)").await, about);
    assert_eq!(driver.text("#firewall-ports").await, PORT.to_string());
    assert!(!driver.page_source().await.contains("last apply/remove failed"));
    let conntrack = driver.text("#conntrack").await;
    let fill: Vec<u64> = conntrack.split(" of ").filter_map(|n| n.trim().parse().ok()).collect();
    assert!(fill.len() == 2 && fill[1] > 0 && fill[0] <= fill[1], "the conntrack fill level: {conntrack:?}");

    // Three NULL packets (no flags), each dropped by the hardening rule: the page's count
    // moves by exactly three (nothing else sends such packets), and stays the kernel's.
    let first = reload_counters(&lab, &driver).await;
    for name in ["accepted", "closed", "tcp_null", "tcp_syn_fin", "rate_per_source", "banned"] {
        assert!(first.contains_key(name), "the page shows counter {name}: {first:?}");
    }
    let answers = lab.probe(&["synburst", CLIENT4, EDGE4, &PORT.to_string(), "3", ""]);
    assert_eq!(answers, 0, "NULL packets get no answer");
    let moved = reload_counters(&lab, &driver).await;
    assert_eq!(moved["tcp_null"], first["tcp_null"] + 3, "the page's tcp_null count moved by the three drops");
    let shot = driver.screenshot("status-page-firewall.png").await;

    // Taken down through the admin API: the page says so and shows no counters; the
    // kernel agrees.
    assert_eq!(firewall(&lab, "remove")["applied"], false);
    driver.open(PAGE).await;
    assert_eq!(driver.text("#firewall").await, "NOT APPLIED");
    // Down, it filters nothing: the ports are what it opens once applied, not "open ports".
    assert_eq!(driver.text("p:has(> #firewall-ports)").await, format!("table inet {TABLE} on veth-e, ports it opens once applied {PORT}"));
    assert!(shown_counters(&driver).await.is_empty(), "not applied: no counters");
    assert!(!Lab::exec(&lab.edge_ns, &["nft", "list", "table", "inet", TABLE]).status.success(), "the table is gone");

    // Put back: applied again, with the kernel's (new) counters.
    assert_eq!(firewall(&lab, "apply")["applied"], true);
    let again = reload_counters(&lab, &driver).await;
    assert_eq!(driver.text("#firewall").await, "applied");
    assert_eq!(driver.text("p:has(> #firewall-ports)").await, about);
    assert_eq!(again.keys().collect::<Vec<_>>(), first.keys().collect::<Vec<_>>(), "the same counters as before");
    assert!(again["tcp_null"] < moved["tcp_null"], "a new table counts from zero: {again:?}");

    driver.call("DELETE", "", Value::Null).await;
    drop(driver);
    lab.stop_edge();
    eprintln!("screenshot: {}", shot.display());
}
