//! Reading the gateway's Prometheus/OpenMetrics text from its admin listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// `GET url` (an admin `/metrics`): checks the answer is 200 in the exposition format,
/// ending with `# EOF`, and returns its text.
pub async fn text(url: &str) -> String {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200, "/metrics on the admin listener");
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "{content_type}"
    );
    let text = resp.text().await.expect("metrics text");
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    text
}

/// The admin listener's `/metrics`, parsed: `name{labels}` (exactly as printed) → value.
pub async fn scrape(admin: SocketAddr) -> HashMap<String, f64> {
    parse(&text(&format!("http://{admin}/metrics")).await)
}

/// Every sample of an exposition text: `name{labels}` (exactly as printed) → value.
pub fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A sample's value; an absent series counts as 0.
pub fn value(metrics: &HashMap<String, f64>, key: &str) -> f64 {
    metrics.get(key).copied().unwrap_or(0.0)
}

/// How much a series moved between two scrapes.
pub fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    value(after, key) - value(before, key)
}
