//! A TCP proxy that can cut a dependency off, to test how a service copes with outages
//! without stopping a server that other tests share.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to a target until [`TcpProxy::cut`]; then refuses new connections
/// and closes open ones, until [`TcpProxy::restore`]. [`TcpProxy::stall`] is the quieter
/// outage: nothing is closed, nothing goes through.
pub struct TcpProxy {
    addr: SocketAddr,
    flow: Arc<watch::Sender<Flow>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Forward,
    /// Connections stay open (and new ones are accepted) but carry nothing, as over a
    /// partitioned network.
    Stall,
    Cut,
}

impl TcpProxy {
    /// Starts forwarding from a free local port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), target).await
    }

    /// Starts forwarding from `listen` to `target`: for a client that was given the address
    /// before anything listened there (and saw its connections refused).
    pub async fn start_at(listen: SocketAddr, target: SocketAddr) -> Self {
        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flow = Arc::new(watch::channel(Flow::Forward).0);
        let task = tokio::spawn(accept(listener, target, Arc::clone(&flow)));
        Self { addr, flow, task }
    }

    /// A proxy to the server `url` names (`amqp://guest:guest@127.0.0.1:5672/%2f`; the port
    /// must be explicit), and the same URL leading through the proxy, to give a service.
    pub async fn in_front_of(url: &str) -> (Self, String) {
        let (head, rest) = url
            .split_once("://")
            .unwrap_or_else(|| panic!("{url} has no scheme"));
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let (userinfo, server) = match authority.rsplit_once('@') {
            Some((userinfo, server)) => (format!("{userinfo}@"), server),
            None => (String::new(), authority),
        };
        let target = tokio::net::lookup_host(server)
            .await
            .unwrap_or_else(|error| panic!("cannot resolve {server} of {url}: {error}"))
            .next()
            .unwrap_or_else(|| panic!("{server} of {url} resolves to nothing"));
        let proxy = Self::start(target).await;
        let proxied = format!("{head}://{userinfo}{}{path}", proxy.addr());
        (proxy, proxied)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.flow.send_replace(Flow::Cut);
    }

    /// Stops carrying bytes without closing anything: open connections hang (for good:
    /// they stay silent after [`TcpProxy::restore`], as a connection through a partition
    /// does), and new ones are accepted but go nowhere until the proxy forwards again.
    pub fn stall(&self) {
        self.flow.send_replace(Flow::Stall);
    }

    /// Forwards again (new connections).
    pub fn restore(&self) {
        self.flow.send_replace(Flow::Forward);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, flow: Arc<watch::Sender<Flow>>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut changes = flow.subscribe();
        let current = *changes.borrow_and_update();
        match current {
            Flow::Cut => drop(client),
            Flow::Stall => {
                tokio::spawn(async move {
                    // Held open, silent, until the proxy cuts (or goes).
                    let _ = changes.wait_for(|flow| *flow == Flow::Cut).await;
                    drop(client);
                });
            }
            Flow::Forward => {
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
                        _ = changes.wait_for(|flow| *flow != Flow::Forward) => {}
                    }
                    let _ = changes.wait_for(|flow| *flow == Flow::Cut).await;
                });
            }
        }
    }
}
