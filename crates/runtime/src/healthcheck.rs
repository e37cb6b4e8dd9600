//! The `healthcheck` command: is the service beside it ready? For container health checks
//! in images that have no shell, curl or wget.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use tessera_config::ConfigError;

/// How long the whole check may take; an orchestrator's own timeout is usually longer.
const LIMIT: Duration = Duration::from_secs(2);

/// The port to ask: `<PREFIX>HTTP_PORT` from `vars`, or `default`.
pub fn port(prefix: &str, default: u16, vars: &[(String, String)]) -> Result<u16, ConfigError> {
    let name = format!("{prefix}HTTP_PORT");
    match vars.iter().find(|(key, _)| *key == name) {
        None => Ok(default),
        Some((_, value)) => value.parse().map_err(|_| {
            ConfigError::setting("http_port", format!("not a port: {value:?}")).in_scope(prefix)
        }),
    }
}

/// Whether `GET /health/ready` on the loopback at `port` answers 200; why not otherwise.
pub fn check(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, LIMIT)
        .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
    let io = |error: std::io::Error| format!("{addr}: {error}");
    stream.set_read_timeout(Some(LIMIT)).map_err(io)?;
    stream.set_write_timeout(Some(LIMIT)).map_err(io)?;
    stream
        .write_all(b"GET /health/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(io)?;
    // The status line is all that matters; a short read is enough.
    let mut head = [0_u8; 64];
    let read = stream.read(&mut head).map_err(io)?;
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("none");
    if status == "200" {
        Ok(())
    } else {
        Err(format!("{addr}/health/ready answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_port_is_the_services_own_or_its_default() {
        assert_eq!(port("SVC_", 8082, &vars(&[])).unwrap(), 8082);
        assert_eq!(
            port("SVC_", 8082, &vars(&[("SVC_HTTP_PORT", "9000")])).unwrap(),
            9000
        );
        let error = port("SVC_", 8082, &vars(&[("SVC_HTTP_PORT", "x")])).unwrap_err();
        assert!(error.to_string().contains("SVC_HTTP_PORT"), "{error}");
    }

    #[test]
    fn nothing_listening_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert!(check(port).is_err());
    }
}
