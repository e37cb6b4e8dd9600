//! A service running inside the test process, on free ports and its own database: the
//! `spawn_app()` of every service's integration tests.

use std::future::Future;
use std::time::Duration;

use tessera_runtime::{BoxError, Context, Endpoints, RunError, RuntimeConfig, ServiceSpec};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A service served by [`tessera_runtime::serve`] in this process until [`InProcess::stop`]
/// (or drop).
pub struct InProcess {
    http: String,
    grpc: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl InProcess {
    /// Starts `spec`'s service with the `<prefix>*` variables in `env` (see
    /// [`crate::service_env`]) and `build` for its endpoints; returns once it is ready.
    pub async fn start<B, Fut>(
        spec: &'static ServiceSpec,
        env: Vec<(String, String)>,
        build: B,
    ) -> Self
    where
        B: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Endpoints, BoxError>> + Send + 'static,
    {
        let config: RuntimeConfig = tessera_config::from_vars(spec.env_prefix, env).unwrap();
        let http = format!("http://{}", config.http_addr(0));
        let grpc = format!("http://{}", config.grpc_addr(0));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(tessera_runtime::serve(spec, config, build, async {
            let _ = stopped.await;
        }));
        let service = Self {
            http,
            grpc,
            stop: Some(stop),
            task: Some(task),
        };
        service.wait_for_ready(200).await;
        service
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
        match reqwest::get(format!("{}/health/ready", self.http)).await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits (up to 10 s) until `/health/ready` answers `status`.
    pub async fn wait_for_ready(&self, status: u16) {
        for _ in 0..200 {
            if self.ready_status().await == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/health/ready never answered {status}");
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of a counter in `/metrics` with all of `labels` (`r#"result="hit""#`),
    /// summed over the series that match; 0 when there is none.
    pub async fn counter(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Stops the service and returns how its `serve` ended.
    pub async fn stop(mut self) -> Result<(), RunError> {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
