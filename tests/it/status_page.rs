//! The status page in a real headless Chromium, driven over the W3C WebDriver protocol by
//! Debian's `chromedriver` (`support::browser`, on this machine's loopback): sign in
//! with the admin token, see the services, switch maintenance on, unblock a banned source,
//! and keep a screenshot (`target/status-page.png`). Skipped with a message when chromium or
//! chromedriver is missing (`PORTCULLIS_REQUIRE_BROWSER=1`, set by `.ci/run`, fails instead).

use bytes::Bytes;
use serde_json::Value;

use crate::support::browser::Driver;
use crate::support::client::h1;
use crate::support::{ADMIN_TOKEN, TestEdge, Upstream};

#[tokio::test]
async fn sign_in_switch_maintenance_and_unblock_in_a_real_browser() {
    let Some(driver) = Driver::start().await else { return };
    let up = Upstream::start("desk").await;
    let spare = Upstream::start("spare").await;
    let edge = TestEdge::new().proxy("finesse", "/", &[(up.addr, 1, 0), (spare.addr, 0, 0)], "").start().await;
    // A banned source to unblock (five failures, as the shield counts them).
    let banned: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let line = portcullis::protect::RequestLine { method: "GET", path: "/", protocol: "HTTP/1.1", host: "x" };
    for _ in 0..5 {
        edge.running().runtime.shield.record(banned, portcullis::config::Category::HttpAuthFailure, line).await;
    }
    assert_eq!(edge.running().runtime.shield.list().len(), 1);
    let base = format!("http://{}/", edge.admin);

    // Wrong token: refused, and the page says so.
    driver.open(&base).await;
    driver.type_into("#token", "not-the-token").await;
    driver.click("#sign-in").await;
    assert_eq!(driver.text_becomes("#login-error", "Wrong token.").await, "Wrong token.");
    assert!(driver.find("#maintenance").await.is_none());

    driver.type_into("#token", ADMIN_TOKEN).await;
    driver.click("#sign-in").await;
    assert_eq!(driver.text_becomes("#maintenance", "off").await, "off");
    assert_eq!(driver.text_becomes("tr.service[data-name=finesse] td.state", "Active").await, "Active");
    let services = driver.text("#services").await;
    assert!(services.contains(&format!("{} UP weight 1", up.addr)) && services.contains("(backup)"), "{services}");
    assert!(driver.text("#blocked").await.contains("203.0.113.9"));

    driver.click("#maintenance-toggle").await;
    assert_eq!(driver.text_becomes("#maintenance", "ON — new sessions are refused").await, "ON — new sessions are refused");
    let state = driver.text_becomes("tr.service[data-name=finesse] td.state", "Inactive (Maintenance mode)").await;
    assert_eq!(state, "Inactive (Maintenance mode)");
    assert!(edge.running().runtime.operate.in_maintenance(), "the switch reached the edge");
    assert_eq!(h1(edge.admin, "GET", "/health", &[], Bytes::new()).await.status, 503);

    driver.click("tr.ban[data-source='203.0.113.9'] button.unblock").await;
    assert!(driver.gone("tr.ban").await, "the row is gone");
    assert!(edge.running().runtime.shield.list().is_empty(), "the ban is lifted");

    // A refused reload shows up with its hint.
    std::fs::write(&edge.config_path, "[server]\nname = \"localhost\"\n[[listener]]\nname = \"x\"\naddress = \"nonsense\"\n").unwrap();
    let _ = edge.running().reload().await;
    driver.open(&base).await;
    let error = driver.text("#config-error").await;
    assert!(error.contains("was refused") && error.contains("listener"), "{error}");

    driver.screenshot("status-page.png").await;

    // Without the cookie the page is only the sign-in form, and the forms need the CSRF token.
    let anonymous = h1(edge.admin, "GET", "/", &[], Bytes::new()).await;
    assert!(anonymous.body.contains("id=\"token\"") && !anonymous.body.contains("id=\"maintenance\""));
    let forged =
        h1(edge.admin, "POST", "/ui/maintenance", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from("enabled=off"))
            .await;
    assert_eq!(forged.status, 401);
    assert!(edge.running().runtime.operate.in_maintenance(), "a cookie-less form post changes nothing");
    assert!(driver.page_source().await.contains("Sign out"));
    driver.click("#sign-out").await;
    driver.element("#token").await; // signed out: the sign-in form again
    driver.call("DELETE", "", Value::Null).await;
    edge.stop().await;
}
