//! A RabbitMQ virtual host of a test's own: its exchange, queues and events are invisible to
//! every other test, and all of them go when the test does.
//!
//! The vhost is created through the management HTTP API when it answers (at
//! `TEST_RABBITMQ_MANAGEMENT_URL`, else port 15672 of the AMQP host), else with `rabbitmqctl`
//! when the broker is local. A test that can have neither fails: the event contract names
//! the services' queues, so services of two tests on one vhost would take each other's
//! events.

use std::time::Duration;

use reqwest::Url;

/// A virtual host that lives as long as this handle (or the shared one, see the module
/// docs). Drop it after every process connected to it, e.g. as the last field of a struct.
pub struct TestBroker {
    url: String,
    /// Taken when it is deleted.
    vhost: Option<Vhost>,
}

struct Vhost {
    name: String,
    admin: Admin,
}

/// How the vhost was created, and so how it is deleted.
#[derive(Clone)]
enum Admin {
    Management {
        api: String,
        user: String,
        password: String,
    },
    Rabbitmqctl,
}

impl TestBroker {
    /// A new, empty virtual host on the test broker ([`crate::amqp_url`]), with the test
    /// user's full permissions on it.
    pub async fn isolated() -> Self {
        let base = Url::parse(&crate::amqp_url()).expect("TEST_AMQP_URL is not a URL");
        let name = format!("test-{}", uuid::Uuid::new_v4().simple());
        let user = decode(base.username());
        let password = decode(base.password().unwrap_or_default());
        for admin in candidates(&base, &user, &password) {
            match admin.create(&name, &user).await {
                Ok(()) => {
                    let mut url = base.clone();
                    url.set_path(&format!("/{name}"));
                    return Self {
                        url: url.to_string(),
                        vhost: Some(Vhost { name, admin }),
                    };
                }
                Err(why) => eprintln!("cannot create a RabbitMQ vhost: {why}"),
            }
        }
        panic!(
            "cannot create a RabbitMQ vhost for this test: enable the management API \
             (scripts/infra.sh does) or run the tests where rabbitmqctl reaches the broker"
        );
    }

    /// The AMQP URL of the vhost, for the services (`<PREFIX>AMQP_URL`) and the test's own
    /// connections ([`crate::events::EventTap::bind_at`]).
    pub fn amqp_url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let Some(vhost) = self.vhost.take() else {
            return;
        };
        // Drop runs outside async code; a short-lived runtime on its own thread does the I/O.
        let name = vhost.name.clone();
        let deleted = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(vhost.admin.delete(&vhost.name))
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("could not delete the RabbitMQ vhost {name}: {deleted:?}");
        }
    }
}

/// The ways to administer the broker at `base`, in the order they are tried.
fn candidates(base: &Url, user: &str, password: &str) -> Vec<Admin> {
    let host = base.host_str().unwrap_or("127.0.0.1");
    let api = std::env::var("TEST_RABBITMQ_MANAGEMENT_URL")
        .unwrap_or_else(|_| format!("http://{host}:15672"));
    let mut admins = vec![Admin::Management {
        api: api.trim_end_matches('/').to_owned(),
        user: user.to_owned(),
        password: password.to_owned(),
    }];
    // rabbitmqctl talks to the node on this machine only.
    if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        admins.push(Admin::Rabbitmqctl);
    }
    admins
}

impl Admin {
    async fn create(&self, name: &str, user: &str) -> Result<(), String> {
        match self {
            Self::Management { api, .. } => {
                self.call(
                    reqwest::Method::PUT,
                    &format!("{api}/api/vhosts/{name}"),
                    None,
                )
                .await?;
                let everything =
                    serde_json::json!({ "configure": ".*", "write": ".*", "read": ".*" });
                let url = format!("{api}/api/permissions/{name}/{user}");
                self.call(reqwest::Method::PUT, &url, Some(everything))
                    .await
            }
            Self::Rabbitmqctl => {
                rabbitmqctl(&["add_vhost", name]).await?;
                rabbitmqctl(&["set_permissions", "-p", name, user, ".*", ".*", ".*"]).await
            }
        }
    }

    async fn delete(&self, name: &str) -> Result<(), String> {
        match self {
            Self::Management { api, .. } => {
                let url = format!("{api}/api/vhosts/{name}");
                self.call(reqwest::Method::DELETE, &url, None).await
            }
            Self::Rabbitmqctl => rabbitmqctl(&["delete_vhost", name]).await,
        }
    }

    /// One management API call, successful or the reason it was not.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(), String> {
        let Self::Management { user, password, .. } = self else {
            unreachable!("only the management API is called over HTTP");
        };
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| error.to_string())?;
        let mut request = client.request(method, url).basic_auth(user, Some(password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {}", response.status()))
        }
    }
}

async fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let output = tokio::process::Command::new("rabbitmqctl")
        // A broker that does not answer must not hang the test.
        .args(["--quiet", "--timeout", "20"])
        .args(args)
        .output()
        .await
        .map_err(|error| format!("cannot run rabbitmqctl: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The percent-decoded user or password of an URL.
fn decode(part: &str) -> String {
    let bytes = part.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match std::str::from_utf8(hex)
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(byte) => {
                    decoded.push(byte);
                    i += 3;
                }
                None => {
                    decoded.push(b'%');
                    i += 1;
                }
            },
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
