//! The settings every service that verifies tokens against auth's JWKS reads.

use reqwest::Url;
use serde::Deserialize;
use tessera_config::ConfigError;

use crate::VerifierSettings;

/// Where auth publishes its keys and which tokens to take: `<PREFIX>JWKS_URL`,
/// `<PREFIX>JWT_ISSUER` and `<PREFIX>JWT_AUDIENCE`, flattened into a service's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteKeys {
    /// Where the auth service publishes its signing keys: https, or http to this host.
    #[serde(default = "defaults::jwks_url")]
    pub jwks_url: String,
    /// Takes an http JWKS URL to another host: only on a network no one else can reach or
    /// alter (a cluster network, a compose network), since whoever can answer for the JWKS
    /// can mint tokens.
    #[serde(default, deserialize_with = "tessera_config::flattened::flag")]
    pub jwks_allow_http: bool,
    /// CA certificates (PEM) to trust for the JWKS besides the public roots (an internal
    /// CA), usually from the file `<PREFIX>JWKS_CA_FILE` names.
    pub jwks_ca: Option<String>,
    /// The `iss` access tokens must carry.
    #[serde(default = "defaults::jwt_issuer")]
    pub jwt_issuer: String,
    /// The `aud` access tokens must carry.
    #[serde(default = "defaults::jwt_audience")]
    pub jwt_audience: String,
}

impl RemoteKeys {
    /// The token verifier's settings; refuses a JWKS URL that could be answered by anyone
    /// on the path.
    pub fn verifier(&self) -> Result<VerifierSettings, ConfigError> {
        check_jwks_url(&self.jwks_url, self.jwks_allow_http)
            .map_err(|problem| ConfigError::setting("jwks_url", problem))?;
        Ok(VerifierSettings {
            jwks_url: Some(self.jwks_url.clone()),
            jwks_ca_pem: self.jwks_ca.clone(),
            ..VerifierSettings::new(&self.jwt_issuer, &self.jwt_audience)
        })
    }
}

/// https anywhere; plain http only to this host, or where the operator allowed it.
fn check_jwks_url(url: &str, allow_http: bool) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|error| format!("{url:?} is not a URL: {error}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_http || is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "{url} is plain http to another host, so anyone on the path could serve keys: \
             use https, or set JWKS_ALLOW_HTTP=true on a network no one else reaches"
        )),
        other => Err(format!(
            "{url}: the scheme {other:?} is neither https nor http"
        )),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    }
}

mod defaults {
    pub fn jwks_url() -> String {
        "http://127.0.0.1:8081/.well-known/jwks.json".to_owned()
    }
    pub fn jwt_issuer() -> String {
        "tessera-auth".to_owned()
    }
    pub fn jwt_audience() -> String {
        "tessera".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Service {
        #[serde(flatten)]
        keys: RemoteKeys,
    }

    #[test]
    fn the_settings_read_from_the_environment_when_flattened() {
        let vars = [
            ("SVC_JWKS_URL", "http://auth:8081/.well-known/jwks.json"),
            ("SVC_JWKS_ALLOW_HTTP", "true"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        let service: Service = tessera_config::from_vars("SVC_", vars).unwrap();
        assert!(service.keys.jwks_allow_http);
        assert!(service.keys.verifier().is_ok());
        let refused: Service = tessera_config::from_vars(
            "SVC_",
            [(
                "SVC_JWKS_URL".to_owned(),
                "http://auth:8081/jwks".to_owned(),
            )],
        )
        .unwrap();
        let error = refused.keys.verifier().unwrap_err();
        assert_eq!(error.variable, "JWKS_URL");
    }

    #[test]
    fn the_ca_comes_from_the_file_jwks_ca_file_names() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"-----BEGIN CERTIFICATE-----\n").unwrap();
        let vars = [(
            "SVC_JWKS_CA_FILE".to_owned(),
            file.path().display().to_string(),
        )];
        let service: Service = tessera_config::from_vars("SVC_", vars).unwrap();
        let settings = service.keys.verifier().unwrap();
        assert_eq!(
            settings.jwks_ca_pem.as_deref(),
            Some("-----BEGIN CERTIFICATE-----")
        );
    }

    #[test]
    fn https_goes_anywhere_and_http_only_to_this_host_unless_allowed() {
        for url in [
            "https://auth.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8081/.well-known/jwks.json",
            "http://[::1]:8081/jwks",
            "http://localhost:8081/jwks",
        ] {
            assert_eq!(check_jwks_url(url, false), Ok(()), "{url}");
        }
        let refused = check_jwks_url("http://auth:8081/.well-known/jwks.json", false);
        assert!(refused.unwrap_err().contains("JWKS_ALLOW_HTTP"));
        assert_eq!(
            check_jwks_url("http://auth:8081/.well-known/jwks.json", true),
            Ok(())
        );
        for bad in ["ftp://auth/jwks", "auth:8081/jwks", "not a url"] {
            assert!(check_jwks_url(bad, true).is_err(), "{bad}");
        }
    }
}
