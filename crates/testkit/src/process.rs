//! A service binary running as a real process, as in production.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running service process; killed when dropped.
pub struct ServiceProcess {
    child: Child,
    ports: (u16, u16),
    http: String,
    grpc: String,
}

impl ServiceProcess {
    /// Starts `binary` (`env!("CARGO_BIN_EXE_users")`) with `args` and `env` (see
    /// [`crate::service_env`]) on free ports and waits until `/health/ready` answers 200.
    ///
    /// A port found free can be taken by someone else before the process binds it; a process
    /// that exits before it is ready is therefore started again on other ports, twice at most.
    pub async fn start(
        binary: impl AsRef<Path>,
        args: &[&str],
        prefix: &str,
        env: &[(String, String)],
    ) -> Self {
        let binary = binary.as_ref();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let ports = (crate::free_port(), crate::free_port());
            match Self::start_on(binary, args, prefix, env, ports).await {
                Ok(process) => return process,
                Err(status) if attempts < 3 => eprintln!(
                    "{} exited before it was ready ({status}); starting it again",
                    binary.display()
                ),
                Err(status) => panic!("{} exited before it was ready: {status}", binary.display()),
            }
        }
    }

    /// Starts `binary` like [`ServiceProcess::start`], but on the given `(http, grpc)` ports
    /// and once only: the status it exited with if it did before it was ready (a port taken
    /// meanwhile, or bad settings), for the caller to decide what to try next.
    pub async fn start_on(
        binary: impl AsRef<Path>,
        args: &[&str],
        prefix: &str,
        env: &[(String, String)],
        (http, grpc): (u16, u16),
    ) -> Result<Self, ExitStatus> {
        let mut env = env.to_vec();
        crate::set_var(&mut env, prefix, "HTTP_PORT", http.to_string());
        crate::set_var(&mut env, prefix, "GRPC_PORT", grpc.to_string());
        let child = Command::new(binary.as_ref())
            .args(args)
            .envs(env)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.as_ref().display()));
        let mut process = Self {
            child,
            ports: (http, grpc),
            http: format!("http://127.0.0.1:{http}"),
            grpc: format!("http://127.0.0.1:{grpc}"),
        };
        process
            .wait_until_ready(Duration::from_secs(30))
            .await
            .map(|()| process)
    }

    /// The REST base URL, without trailing slash.
    pub fn http_url(&self) -> &str {
        &self.http
    }

    /// The gRPC endpoint URL.
    pub fn grpc_url(&self) -> &str {
        &self.grpc
    }

    /// The `(http, grpc)` ports it listens on, to start its successor where others expect it.
    pub fn ports(&self) -> (u16, u16) {
        self.ports
    }

    /// The process id, e.g. to send it a signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit on its own.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and returns at once, for a test that keeps calling the process while it
    /// drains; [`ServiceProcess::wait_for_exit`] then says how it ended.
    pub fn terminate(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// Kills the process with SIGKILL, as the OOM killer or a lost node would: nothing gets
    /// to drain or flush. Returns once it is gone.
    pub async fn kill(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_for_exit(Duration::from_secs(10)).await
    }

    /// Freezes the process with SIGSTOP, as a stalled host or a long pause would: its sockets
    /// stay open and accept connections, but nothing is answered until the guard is dropped.
    pub fn suspend(&self) -> Suspended<'_> {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        Suspended { process: self }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        // Already gone is fine: whoever waits for it sees how it ended.
        let _ = nix::sys::signal::kill(pid, signal);
    }

    /// Stops the process as its orchestrator would, with SIGTERM, and returns its exit status
    /// once it has drained and exited (within `limit`, else it is killed and this panics).
    pub async fn stop(mut self, limit: Duration) -> ExitStatus {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;

        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        // Already gone is fine: the status below says how it ended.
        let _ = kill(pid, Signal::SIGTERM);
        self.wait_for_exit(limit).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        crate::prometheus::scrape(&self.http).await
    }

    /// The value of a counter in `/metrics`; see [`crate::prometheus::counter`].
    pub async fn counter(&self, name: &str, labels: &[&str]) -> f64 {
        crate::prometheus::counter(&self.metrics().await, name, labels)
    }

    /// Ready within `limit`, or the status the process exited with first.
    async fn wait_until_ready(&mut self, limit: Duration) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + limit;
        let url = format!("{}/health/ready", self.http);
        let client = crate::http_client();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(status);
            }
            // A 200 from the port alone could come from another test's process that took
            // the port first (ours then exits on the failed bind): ready means this process
            // is the one listening on both ports.
            if let Ok(response) = client.get(&url).send().await
                && response.status() == reqwest::StatusCode::OK
                && self.listens_on_its_ports()
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not answer 200 within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this process holds the listening sockets of both its ports (Linux's `/proc`).
    fn listens_on_its_ports(&self) -> bool {
        let (http, grpc) = self.ports;
        let held = sockets_of(self.child.id());
        [http, grpc].iter().all(|port| {
            listening_sockets(*port)
                .iter()
                .any(|inode| held.contains(inode))
        })
    }

    /// A gRPC channel to the service.
    pub async fn channel(&self) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        tonic::transport::Endpoint::from_shared(self.grpc.clone())
            .unwrap()
            .connect()
            .await
    }

    /// The services gRPC reflection (v1) advertises.
    pub async fn grpc_reflection_services(&self) -> Vec<String> {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

        let mut client = ServerReflectionClient::new(self.channel().await.unwrap());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match responses
            .message()
            .await
            .unwrap()
            .and_then(|r| r.message_response)
        {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection answer: {other:?}"),
        }
    }

    /// The status `grpc.health.v1.Health/Check` reports for `service` (`""` for overall).
    pub async fn grpc_health(&self, service: &str) -> Result<i32, tonic::Status> {
        let channel = self
            .channel()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        };
        Ok(client.check(request).await?.into_inner().status)
    }
}

/// The inodes of the sockets listening on TCP `port` (IPv4 or IPv6), from `/proc/net/tcp*`.
fn listening_sockets(port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    (fields.len() > 9 && fields[1].ends_with(&local) && fields[3] == LISTEN)
                        .then(|| fields[9].parse().ok())
                        .flatten()
                })
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// The inodes of the sockets process `pid` has open, from its `/proc/<pid>/fd` links.
fn sockets_of(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// A process frozen by [`ServiceProcess::suspend`]. Dropping it continues the process
/// (SIGCONT), so a test that fails meanwhile leaves no stopped process behind.
#[must_use = "the process runs again as soon as this is dropped"]
pub struct Suspended<'a> {
    process: &'a ServiceProcess,
}

impl Suspended<'_> {
    /// Lets the process run again.
    pub fn resume(self) {}
}

impl Drop for Suspended<'_> {
    fn drop(&mut self) {
        self.process.signal(nix::sys::signal::Signal::SIGCONT);
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_among_its_holders_sockets_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let listening = listening_sockets(port);
        assert_eq!(listening.len(), 1, "one socket listens on {port}");
        assert!(sockets_of(std::process::id()).contains(&listening[0]));
        // PID 1 is never this test's process, so it does not hold our listener.
        assert!(!sockets_of(1).contains(&listening[0]));
        drop(listener);
        assert!(listening_sockets(port).is_empty());
    }
}
