//! A certificate authority of the test's own, issuing the identities of internal gRPC.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A CA that issues certificates named after services (`users`), as a deployment's does.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate with its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its key (PKCS#8).
    pub key_pem: String,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tessera test CA");
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// The CA's certificate.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `name` (its DNS name), for use as TLS server and client.
    pub fn issue(&self, name: &str) -> Issued {
        self.issue_with(name, |_| {})
    }

    /// [`TestCa::issue`] with its parameters changed by `adjust` first (expired, another
    /// usage).
    pub fn issue_with(&self, name: &str, adjust: impl FnOnce(&mut CertificateParams)) -> Issued {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The variables that make a service (`prefix`, `USERS_`) the gRPC peer `name` of this
    /// CA: `GRPC_TLS_CERT`, `_KEY` and `_CA`.
    pub fn service_env(&self, prefix: &str, name: &str) -> Vec<(String, String)> {
        let issued = self.issue(name);
        vec![
            (format!("{prefix}GRPC_TLS_CERT"), issued.cert_pem),
            (format!("{prefix}GRPC_TLS_KEY"), issued.key_pem),
            (format!("{prefix}GRPC_TLS_CA"), self.pem()),
        ]
    }

    /// A channel to `url` (`https://127.0.0.1:<port>`) presenting `client` (none: no
    /// certificate) and taking only the server `server` of this CA.
    pub async fn channel(
        &self,
        url: &str,
        client: Option<&Issued>,
        server: &str,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.pem()))
            .domain_name(server);
        if let Some(client) = client {
            tls = tls.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
        }
        Endpoint::from_shared(url.to_owned())
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await
    }
}
