//! Mutual TLS on internal gRPC: the service's certificate and key, and the CA its peers'
//! certificates must come from.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use secrecy::{ExposeSecret as _, SecretString};
use tessera_config::ConfigError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A service's identity on internal gRPC, checked at start: a certificate chain issued by
/// the CA for both TLS server and client use, whose first DNS name is the service's name
/// to its peers; the key that matches it; the CA.
#[derive(Clone)]
pub struct GrpcTls {
    cert_pem: String,
    key_pem: SecretString,
    ca_pem: String,
    name: String,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl GrpcTls {
    /// The TLS of `<PREFIX>GRPC_TLS_CERT`, `_KEY` and `_CA` (PEM, or from the files their
    /// `_FILE` variants name): none when none is set, all three or an error otherwise.
    pub fn from_pem(
        cert: Option<&str>,
        key: Option<&SecretString>,
        ca: Option<&str>,
    ) -> Result<Option<Self>, ConfigError> {
        let (cert_pem, key_pem, ca_pem) = match (cert, key, ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            _ => {
                let missing = [
                    ("grpc_tls_cert", cert.is_none()),
                    ("grpc_tls_key", key.is_none()),
                    ("grpc_tls_ca", ca.is_none()),
                ]
                .into_iter()
                .find_map(|(field, missing)| missing.then_some(field))
                .unwrap_or("grpc_tls_cert");
                return Err(ConfigError::setting(
                    missing,
                    "mutual TLS needs the certificate, its key and the CA: set all three or none",
                ));
            }
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid("grpc_tls_cert", format!("not PEM certificates: {error}")))?;
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(invalid("grpc_tls_cert", "holds no PEM certificate"));
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose_secret().as_bytes())
            .map_err(|error| invalid("grpc_tls_key", format!("not a PEM private key: {error}")))?;
        let roots = Arc::new(root_store(ca_pem)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let name = names_of(leaf).into_iter().next().ok_or_else(|| {
            invalid(
                "grpc_tls_cert",
                "names no DNS name (subjectAltName): the service's name to its peers",
            )
        })?;
        // The verifier the server will hold checks the service's own certificate first.
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|error| invalid("grpc_tls_ca", error.to_string()))?;
        check_issued(
            leaf,
            intermediates,
            &name,
            clients.as_ref(),
            roots,
            &provider,
        )?;
        let acceptor = acceptor(chain.clone(), key, clients, provider)?;
        Ok(Some(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.clone(),
            ca_pem: ca_pem.to_owned(),
            name,
            acceptor,
        }))
    }

    /// Who this service is to its peers: its certificate's first DNS name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, self.key_pem.expose_secret())
    }

    /// The server side: each connection accepted from `listener` is handed on once its
    /// handshake is done, which presents the certificate and demands one of the CA from the
    /// client; a handshake not done within `limit` is dropped, so a peer that connects and
    /// stalls holds nothing for long. Stops accepting (and closes the listener) when
    /// `stop` fires.
    pub(crate) fn incoming(
        &self,
        listener: TcpListener,
        limit: Duration,
        stop: CancellationToken,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + use<> {
        let (handed, receiver) = mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    () = handed.closed() => break,
                    accepted = listener.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, most likely: let some close first.
                        tracing::warn!(%error, "gRPC cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, handed) = (acceptor.clone(), handed.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = handed.send(Ok(tls)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "gRPC TLS handshake refused");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "gRPC TLS handshake not done within {limit:?}");
                        }
                    }
                });
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|stream| (stream, receiver))
        })
    }

    /// The client side of calls to the service named `server`: the server must present a
    /// certificate of the CA for that name, wherever it is reached.
    pub(crate) fn client(&self, server: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(server)
    }
}

/// The DNS names of the certificate a client presented on this request's connection: none
/// without TLS or without a certificate. The handshake has verified the certificate.
pub(crate) fn peer_names<B>(request: &http::Request<B>) -> Vec<String> {
    request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|chain| chain.first().map(names_of))
        .unwrap_or_default()
}

fn names_of(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert)
        .map(|cert| cert.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The server's TLS: the certificate with its key (refused if the key is another's),
/// client certificates demanded of `clients`, HTTP/2.
fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    clients: Arc<dyn ClientCertVerifier>,
    provider: Arc<CryptoProvider>,
) -> Result<TlsAcceptor, ConfigError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid("grpc_tls_cert", error.to_string()))?;
    let mut config = builder
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => invalid(
                "grpc_tls_key",
                format!("does not belong to the certificate: {error}"),
            ),
            other => invalid("grpc_tls_key", format!("cannot sign with it: {other}")),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert =
            cert.map_err(|error| invalid("grpc_tls_ca", format!("not PEM certificates: {error}")))?;
        roots
            .add(cert)
            .map_err(|error| invalid("grpc_tls_ca", format!("not a CA certificate: {error}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("grpc_tls_ca", "holds no PEM certificate"));
    }
    Ok(roots)
}

/// Peers will check the certificate against the CA, as a server for `name` and as a client:
/// a certificate they would refuse (another CA, expired, the wrong key usages) is refused
/// here, at start, rather than at every call.
fn check_issued(
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    name: &str,
    as_client: &dyn ClientCertVerifier,
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<(), ConfigError> {
    let refused = |role: &str, error: &dyn std::fmt::Display| {
        invalid(
            "grpc_tls_cert",
            format!("peers would refuse it as a {role}: {error}"),
        )
    };
    let now = UnixTime::now();
    as_client
        .verify_client_cert(leaf, intermediates, now)
        .map_err(|error| refused("client", &error))?;
    let as_server = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|error| invalid("grpc_tls_ca", error.to_string()))?;
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|error| invalid("grpc_tls_cert", format!("DNS name {name:?}: {error}")))?;
    as_server
        .verify_server_cert(leaf, intermediates, &server_name, &[], now)
        .map_err(|error| refused("server", &error))?;
    Ok(())
}

fn invalid(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::setting(field, problem)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tessera_testkit::pki::{Issued, TestCa};

    use super::*;

    fn load(cert: &str, key: &str, ca: &str) -> Result<Option<GrpcTls>, ConfigError> {
        GrpcTls::from_pem(Some(cert), Some(&SecretString::from(key)), Some(ca))
    }

    fn problem(cert: &str, key: &str, ca: &str) -> (String, String) {
        let error = load(cert, key, ca).unwrap_err();
        (error.variable, error.problem)
    }

    #[test]
    fn a_certificate_of_the_ca_with_its_key_names_the_service() {
        let ca = TestCa::new();
        let Issued { cert_pem, key_pem } = ca.issue("users");
        let tls = load(&cert_pem, &key_pem, &ca.pem()).unwrap().unwrap();
        assert_eq!(tls.name(), "users");
        assert!(
            !format!("{tls:?}").contains("PRIVATE"),
            "the key is never printed"
        );
        assert!(GrpcTls::from_pem(None, None, None).unwrap().is_none());
    }

    #[test]
    fn one_or_two_of_the_three_settings_are_refused_naming_a_missing_one() {
        let ca = TestCa::new();
        let issued = ca.issue("users");
        let key = SecretString::from(issued.key_pem.clone());
        let only_cert = GrpcTls::from_pem(Some(&issued.cert_pem), None, None).unwrap_err();
        assert_eq!(only_cert.variable, "GRPC_TLS_KEY");
        let no_ca = GrpcTls::from_pem(Some(&issued.cert_pem), Some(&key), None).unwrap_err();
        assert_eq!(no_ca.variable, "GRPC_TLS_CA");
        assert!(no_ca.problem.contains("all three"), "{}", no_ca.problem);
    }

    #[test]
    fn material_peers_would_refuse_is_refused_at_start() {
        let ca = TestCa::new();
        let other_ca = TestCa::new();
        let good = ca.issue("users");
        let stranger = other_ca.issue("users");

        let (variable, _) = problem("not pem", &good.key_pem, &ca.pem());
        assert_eq!(variable, "GRPC_TLS_CERT");
        let (variable, _) = problem(&good.cert_pem, "not pem", &ca.pem());
        assert_eq!(variable, "GRPC_TLS_KEY");
        let (variable, _) = problem(&good.cert_pem, &good.key_pem, "not pem");
        assert_eq!(variable, "GRPC_TLS_CA");

        let (variable, text) = problem(&good.cert_pem, &stranger.key_pem, &ca.pem());
        assert_eq!(variable, "GRPC_TLS_KEY");
        assert!(text.contains("does not belong"), "{text}");

        let (variable, text) = problem(&stranger.cert_pem, &stranger.key_pem, &ca.pem());
        assert_eq!(variable, "GRPC_TLS_CERT");
        assert!(text.contains("peers would refuse"), "{text}");

        let expired = ca.issue_with("users", |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        });
        let (_, text) = problem(&expired.cert_pem, &expired.key_pem, &ca.pem());
        assert!(text.contains("peers would refuse"), "{text}");

        let server_only = ca.issue_with("users", |params| {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        });
        let (_, text) = problem(&server_only.cert_pem, &server_only.key_pem, &ca.pem());
        assert!(text.contains("as a client"), "{text}");
    }

    #[test]
    fn a_certificate_without_a_dns_name_has_no_identity() {
        let ca = TestCa::new();
        let nameless = ca.issue_with("users", |params| params.subject_alt_names.clear());
        let (variable, text) = problem(&nameless.cert_pem, &nameless.key_pem, &ca.pem());
        assert_eq!(variable, "GRPC_TLS_CERT");
        assert!(text.contains("DNS name"), "{text}");
    }

    #[test]
    fn a_client_url_must_match_whether_tls_is_on() {
        let ca = TestCa::new();
        let issued = ca.issue("orders");
        let tls = load(&issued.cert_pem, &issued.key_pem, &ca.pem())
            .unwrap()
            .unwrap();
        let endpoint = |tls: Option<&GrpcTls>, url: &str| {
            super::super::endpoint(tls, "users_grpc_url", url, "users")
        };
        assert!(endpoint(Some(&tls), "https://users:50052").is_ok());
        assert!(endpoint(None, "http://127.0.0.1:50052").is_ok());
        let plain_with_tls = endpoint(Some(&tls), "http://users:50052").unwrap_err();
        assert_eq!(plain_with_tls.variable, "USERS_GRPC_URL");
        assert!(plain_with_tls.problem.contains("not https"));
        let tls_without = endpoint(None, "https://users:50052").unwrap_err();
        assert!(tls_without.problem.contains("GRPC_TLS_CERT"));
        assert!(endpoint(None, "not a url").is_err());
    }
}
