//! Span export over OTLP/gRPC, when a collector is configured.
//!
//! Trace context exists either way ([`crate::trace_context`]): log lines name their trace and
//! `traceparent` crosses every hop. Only exporting depends on `OTEL_EXPORTER_OTLP_ENDPOINT`.

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;

use crate::trace_context::Detail;

/// The standard `OTEL_*` variables this process honours (read with the prefix `OTEL_`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExportSettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: an OTLP/gRPC collector, `http://collector:4317`.
    /// Nothing is exported when unset or empty (OpenTelemetry reads an empty variable as
    /// unset, which lets compose files pass `${VAR:-}` through).
    pub exporter_otlp_endpoint: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG`: the share of traces started here that are sampled, 0 to 1
    /// (default 1). A trace started by a caller follows the caller's decision.
    pub traces_sampler_arg: Option<f64>,
}

impl ExportSettings {
    /// The collector spans go to, if any.
    fn endpoint(&self) -> Option<&str> {
        self.exporter_otlp_endpoint
            .as_deref()
            .filter(|endpoint| !endpoint.trim().is_empty())
    }

    /// The share of traces started here that are sampled (not checked: see [`provider`]).
    fn ratio(&self) -> f64 {
        self.traces_sampler_arg.unwrap_or(1.0)
    }

    /// The spans worth making: all of them when they are exported, else only those that carry
    /// trace context.
    pub fn detail(&self) -> Detail {
        if self.endpoint().is_some() {
            Detail::Full
        } else {
            Detail::ContextOnly {
                sampled: self.ratio(),
            }
        }
    }
}

/// Export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The sampling ratio (`OTEL_TRACES_SAMPLER_ARG`) is outside 0..=1.
    #[error("must be between 0 and 1, not {0}")]
    Ratio(f64),
    /// The exporter rejected its endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[error("not a usable OTLP endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The tracer provider of service `name` at `version`: batch-exporting to the configured
/// endpoint, or exporting nothing. Call within a Tokio runtime (the gRPC client lives there),
/// and [`SdkTracerProvider::shutdown`] it before the runtime ends, to flush.
pub fn provider(
    name: &'static str,
    version: &'static str,
    settings: &ExportSettings,
) -> Result<SdkTracerProvider, ExportError> {
    let ratio = settings.ratio();
    if !(0.0..=1.0).contains(&ratio) {
        return Err(ExportError::Ratio(ratio));
    }
    let resource = Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", version))
        .build();
    let builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))));
    let Some(endpoint) = settings.endpoint() else {
        return Ok(builder.build());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(builder.with_batch_exporter(exporter).build())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_ratio_outside_zero_to_one_is_refused() {
        let settings = ExportSettings {
            traces_sampler_arg: Some(1.5),
            ..ExportSettings::default()
        };
        let error = provider("svc", "0", &settings).unwrap_err();
        assert!(matches!(error, ExportError::Ratio(_)), "{error}");
    }

    #[tokio::test]
    async fn an_empty_endpoint_exports_nothing() {
        let settings = ExportSettings {
            exporter_otlp_endpoint: Some(String::new()),
            ..ExportSettings::default()
        };
        assert!(provider("svc", "0", &settings).is_ok());
        assert_eq!(settings.detail(), Detail::ContextOnly { sampled: 1.0 });
    }

    #[test]
    fn spans_are_made_in_full_only_when_exported() {
        assert_eq!(
            ExportSettings::default().detail(),
            Detail::ContextOnly { sampled: 1.0 }
        );
        let settings = ExportSettings {
            exporter_otlp_endpoint: Some("http://collector:4317".to_owned()),
            ..ExportSettings::default()
        };
        assert_eq!(settings.detail(), Detail::Full);
    }

    #[test]
    fn without_export_the_sampling_ratio_still_decides_the_sampled_flag() {
        let settings = ExportSettings {
            traces_sampler_arg: Some(0.25),
            ..ExportSettings::default()
        };
        assert_eq!(settings.detail(), Detail::ContextOnly { sampled: 0.25 });
    }

    #[tokio::test]
    async fn a_malformed_endpoint_is_refused() {
        let settings = ExportSettings {
            exporter_otlp_endpoint: Some("not a url".to_owned()),
            ..ExportSettings::default()
        };
        let error = provider("svc", "0", &settings).unwrap_err();
        assert!(matches!(error, ExportError::Exporter(_)), "{error}");
    }
}
