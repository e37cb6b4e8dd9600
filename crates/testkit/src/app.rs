//! A service running inside the test process, on free ports and its own database: the
//! `spawn_app()` of every service's integration tests.

use std::net::SocketAddr;
use std::time::Duration;

use tessera_runtime::{Listeners, RunError, Service};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a service gets to answer `/health/ready` (a fresh database, a first broker
/// connection; slow on a loaded CI machine, so generous).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A service's REST and gRPC ports, bound on 127.0.0.1 before it starts: their addresses are
/// known in advance (to configure another service with) and nobody can take them meanwhile.
pub struct Ports {
    http: std::net::TcpListener,
    grpc: std::net::TcpListener,
}

impl Ports {
    /// Two ports the system picks.
    pub fn bind() -> Self {
        Self::bind_to(0, 0)
    }

    fn bind_to(http: u16, grpc: u16) -> Self {
        let listen = |port: u16| {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .unwrap_or_else(|error| panic!("cannot bind 127.0.0.1:{port}: {error}"))
        };
        Self {
            http: listen(http),
            grpc: listen(grpc),
        }
    }

    /// `http://127.0.0.1:<port>` of the REST side.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http.local_addr().unwrap())
    }

    fn into_listeners(self) -> Listeners {
        let adopt = |listener: std::net::TcpListener| {
            listener.set_nonblocking(true).unwrap();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        Listeners {
            http: adopt(self.http),
            grpc: adopt(self.grpc),
        }
    }
}

/// The service's `serve` has returned.
struct Stopped;

/// A service served by [`tessera_runtime::serve`] in this process until [`InProcess::stop`]
/// (or drop).
pub struct InProcess {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    http: String,
    grpc: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl InProcess {
    /// Starts `S` on free ports with the `<prefix>*` variables in `env` (see
    /// [`crate::service_env`]); returns once it is ready.
    pub async fn start<S: Service>(env: Vec<(String, String)>) -> Self {
        Self::start_on::<S>(Ports::bind(), env).await
    }

    /// [`InProcess::start`] on ports bound beforehand.
    pub async fn start_on<S: Service>(ports: Ports, env: Vec<(String, String)>) -> Self {
        let (config, settings) = tessera_runtime::configure::<S>(env).unwrap();
        let http_addr = ports.http.local_addr().unwrap();
        let grpc_addr = ports.grpc.local_addr().unwrap();
        let listeners = ports.into_listeners();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(tessera_runtime::serve::<S>(
            config,
            settings,
            Some(listeners),
            async {
                let _ = stopped.await;
            },
        ));
        let mut service = Self {
            http_addr,
            grpc_addr,
            http: format!("http://{http_addr}"),
            grpc: format!("http://{grpc_addr}"),
            stop: Some(stop),
            task: Some(task),
        };
        service.wait_until_started().await;
        service
    }

    /// Waits for readiness, failing at once with the reason when the service stops instead.
    async fn wait_until_started(&mut self) {
        if self.poll_ready(200).await.is_err() {
            let outcome = self.task.take().unwrap().await;
            panic!("the service stopped before it was ready: {outcome:?}");
        }
    }

    /// Polls `/health/ready` until it answers `status` (up to [`READY_WITHIN`]); `Err` as soon
    /// as the service has stopped.
    async fn poll_ready(&self, status: u16) -> Result<(), Stopped> {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        while tokio::time::Instant::now() < deadline {
            if self.task.as_ref().is_none_or(JoinHandle::is_finished) {
                return Err(Stopped);
            }
            if self.ready_status().await == status {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{}/health/ready did not answer {status} within {READY_WITHIN:?}",
            self.http
        );
    }

    /// `http://127.0.0.1:<port>` of the REST side.
    pub fn http(&self) -> &str {
        &self.http
    }

    /// `http://127.0.0.1:<port>` of the gRPC side.
    pub fn grpc(&self) -> &str {
        &self.grpc
    }

    /// A gRPC channel to the service.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The status `/health/ready` answers, 0 when it does not answer.
    pub async fn ready_status(&self) -> u16 {
        match crate::get(format!("{}/health/ready", self.http)).await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits (up to [`READY_WITHIN`]) until `/health/ready` answers `status`.
    pub async fn wait_for_ready(&self, status: u16) {
        if self.poll_ready(status).await.is_err() {
            panic!(
                "{} stopped while waiting for /health/ready {status}",
                self.http
            );
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        crate::prometheus::scrape(&self.http).await
    }

    /// The value of a counter in `/metrics`; see [`crate::prometheus::counter`].
    pub async fn counter(&self, name: &str, labels: &[&str]) -> f64 {
        crate::prometheus::counter(&self.metrics().await, name, labels)
    }

    /// Stops the service and returns how its `serve` ended.
    pub async fn stop(mut self) -> Result<(), RunError> {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap()
    }

    /// Waits (up to [`READY_WITHIN`]) for the service to stop on its own and returns how its
    /// `serve` ended.
    pub async fn wait_until_stopped(mut self) -> Result<(), RunError> {
        let task = self.task.take().unwrap();
        tokio::time::timeout(READY_WITHIN, task)
            .await
            .expect("the service did not stop")
            .unwrap()
    }

    /// Stops the service cleanly and binds its ports again, to start it anew where other
    /// services expect it.
    pub async fn stop_keeping_ports(self) -> Ports {
        let (http, grpc) = (self.http_addr.port(), self.grpc_addr.port());
        self.stop().await.unwrap();
        Ports::bind_to(http, grpc)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
