//! A collector that cannot be reached is reported in the log, not silently dropped.
//!
//! Its own binary: the exporter reports from its background thread, which sees only the
//! global subscriber, and a process has one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use tessera_observability::otlp::{self, ExportSettings};
use tessera_observability::trace_context::{self, Detail};
use tracing_subscriber::layer::SubscriberExt;

use crate::support::Events;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_is_logged_as_an_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let settings = ExportSettings {
        exporter_otlp_endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..ExportSettings::default()
    };
    let provider = otlp::provider("svc", "0", &settings).unwrap();
    let events = Events::default();
    let subscriber = tracing_subscriber::registry()
        .with(trace_context::layer(&provider, Detail::Full))
        .with(events.clone());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    drop(tracing::info_span!("request").entered());
    let flushed = {
        let provider = provider.clone();
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .unwrap()
    };

    assert!(flushed.is_err(), "nothing listens on port {port}");
    let events = events.recorded();
    assert!(
        events
            .iter()
            .any(|(level, target, fields)| *level == tracing::Level::ERROR
                && target == "opentelemetry_sdk"
                && fields.get("name").map(String::as_str)
                    == Some("BatchSpanProcessor.ExportError")),
        "{events:?}"
    );
    let _ = provider.shutdown();
}
