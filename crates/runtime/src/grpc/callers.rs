//! Which peers may call which method, by the names on their certificates.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};

use super::tls;

/// What every certified peer may call: health (probes, load balancers) and reflection.
const OPEN_TO_PEERS: &[&str] = &[
    "grpc.health.v1.Health/",
    "grpc.reflection.v1.ServerReflection/",
    "grpc.reflection.v1alpha.ServerReflection/",
];

/// The identities allowed to call each method (`package.Service/Method`); see
/// [`crate::ServiceSpec::grpc_callers`].
pub type Grants = &'static [(&'static str, &'static [&'static str])];

/// Lets a call through when its caller's certificate names an identity allowed for its
/// method, and answers PERMISSION_DENIED otherwise: a method nobody is granted is closed.
/// Without grants (no TLS) it lets everything through.
#[derive(Clone)]
pub(crate) struct CallerCheck {
    grants: Option<Arc<HashMap<&'static str, &'static [&'static str]>>>,
}

impl CallerCheck {
    pub(crate) fn new(grants: Option<Grants>) -> Self {
        Self {
            grants: grants.map(|grants| Arc::new(grants.iter().copied().collect())),
        }
    }

    /// Why `names` may not call `path` (`/package.Service/Method`), if they may not.
    fn refusal(&self, path: &str, names: &[String]) -> Option<tonic::Status> {
        let grants = self.grants.as_ref()?;
        let method = path.trim_start_matches('/');
        if names.is_empty() {
            return Some(tonic::Status::unauthenticated(
                "internal gRPC needs a client certificate of the services' CA",
            ));
        }
        if OPEN_TO_PEERS.iter().any(|open| method.starts_with(open)) {
            return None;
        }
        let allowed = grants.get(method).copied().unwrap_or_default();
        if names.iter().any(|name| allowed.contains(&name.as_str())) {
            return None;
        }
        tracing::warn!(caller = ?names, method, "internal gRPC call refused: caller not allowed");
        Some(tonic::Status::permission_denied(format!(
            "{} may not call {method}",
            names.join("/"),
        )))
    }
}

impl<S> tower::Layer<S> for CallerCheck {
    type Service = Checked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Checked {
            check: self.clone(),
            inner,
        }
    }
}

/// A service behind a [`CallerCheck`].
#[derive(Clone)]
pub(crate) struct Checked<S> {
    check: CallerCheck,
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Checked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.check.grants.is_none() {
            return Either::Right(self.inner.call(request));
        }
        let names = tls::peer_names(&request);
        match self.check.refusal(request.uri().path(), &names) {
            Some(status) => Either::Left(ready(Ok(status.into_http()))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRANTS: Grants = &[
        ("pkg.Users/Create", &["auth"]),
        ("pkg.Users/Get", &["orders", "operator"]),
        ("pkg.Users/Closed", &[]),
    ];

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn code(path: &str, caller: &[&str]) -> Option<tonic::Code> {
        CallerCheck::new(Some(GRANTS))
            .refusal(path, &names(caller))
            .map(|status| status.code())
    }

    #[test]
    fn a_granted_caller_passes_and_any_other_is_denied() {
        assert_eq!(code("/pkg.Users/Create", &["auth"]), None);
        assert_eq!(code("/pkg.Users/Get", &["operator"]), None);
        assert_eq!(
            code("/pkg.Users/Create", &["orders"]),
            Some(tonic::Code::PermissionDenied)
        );
    }

    #[test]
    fn a_method_nobody_is_granted_is_closed_to_all() {
        for method in ["/pkg.Users/Closed", "/pkg.Users/NotInTheTable"] {
            assert_eq!(code(method, &["auth"]), Some(tonic::Code::PermissionDenied));
        }
    }

    #[test]
    fn a_certificate_with_several_names_passes_on_any_granted_one() {
        assert_eq!(
            code("/pkg.Users/Create", &["auth.tessera.svc", "auth"]),
            None
        );
    }

    #[test]
    fn health_and_reflection_are_open_to_every_certified_peer_only() {
        assert_eq!(code("/grpc.health.v1.Health/Check", &["anyone"]), None);
        assert_eq!(
            code(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                &["x"]
            ),
            None
        );
        assert_eq!(
            code("/grpc.health.v1.Health/Check", &[]),
            Some(tonic::Code::Unauthenticated)
        );
    }

    #[test]
    fn without_tls_nothing_is_checked() {
        let check = CallerCheck::new(None);
        assert!(check.refusal("/pkg.Users/Closed", &[]).is_none());
    }

    #[test]
    fn a_look_alike_path_is_not_a_granted_method() {
        assert_eq!(
            code("/pkg.Users/Create/", &["auth"]),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code("/grpc.health.v1.HealthX/Check", &["auth"]),
            Some(tonic::Code::PermissionDenied)
        );
    }
}
