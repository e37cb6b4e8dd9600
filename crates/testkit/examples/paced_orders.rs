//! Open-loop load of order placements, each with an `Idempotency-Key` of its own: what
//! `make bench` uses where oha cannot go, since oha sends the same headers with every request
//! and a repeated key is a replay, not a placement.
//!
//! `paced_orders URL TOKEN BODY RATE SECONDS` starts RATE requests a second for SECONDS on a
//! fixed schedule, whatever the answers take, and times each from the moment it was due, as
//! oha's `--latency-correction` does: a request the client could only send late is measured
//! with the wait, so a stalled server cannot hide behind coordinated omission. Prints one JSON
//! object: requests offered and answered, non-201 answers, and p50/p99/max in milliseconds.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::mpsc;

/// Longest a request may take before it counts as an error.
const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, body, rate, seconds] = args.as_slice() else {
        eprintln!("usage: paced_orders URL TOKEN BODY RATE SECONDS");
        std::process::exit(2);
    };
    let (Ok(rate), Ok(seconds)) = (rate.parse::<u32>(), seconds.parse::<u32>()) else {
        eprintln!("RATE and SECONDS are whole numbers");
        std::process::exit(2);
    };
    if rate == 0 || seconds == 0 {
        eprintln!("RATE and SECONDS must be above 0");
        std::process::exit(2);
    }
    tessera_testkit::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .unwrap_or_else(|error| {
            eprintln!("cannot build an HTTP client: {error}");
            std::process::exit(1);
        });
    let run = uuid::Uuid::now_v7().simple();
    let total = u64::from(rate) * u64::from(seconds);
    let interval = Duration::from_secs(1) / rate;
    let (results, mut received) = mpsc::unbounded_channel();
    let start = tokio::time::Instant::now();
    for sent in 0..total {
        let due = start + interval * u32::try_from(sent).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due).await;
        let request = client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("paced-{run}-{sent}"))
            .body(body.clone());
        let results = results.clone();
        tokio::spawn(async move {
            let created = matches!(
                request.send().await.map(|response| response.status()),
                Ok(StatusCode::CREATED)
            );
            // The channel outlives every task: the receiver waits for all senders to go.
            let _ = results.send((due.into_std().elapsed(), created));
        });
    }
    drop(results);
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0u64;
    while let Some((latency, created)) = received.recv().await {
        latencies.push(latency);
        errors += u64::from(!created);
    }
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies
            .get(index)
            .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    let elapsed = start.into_std().elapsed();
    println!(
        "{}",
        json!({
            "offered_per_sec": rate,
            "answered_per_sec": latencies.len() as f64 / elapsed.as_secs_f64(),
            "requests": total,
            "errors": errors,
            "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99),
            "max_ms": percentile(1.0),
        })
    );
}
