//! Clients calling a service side by side while a fault strikes, and what became of each of
//! their requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use serde_json::Value;
use tessera_jwt::Role;
use tokio::task::JoinHandle;

use crate::helpers::{TestApp, an_order, key};

/// Longest a request may go unanswered: a hang becomes a failed request to report, not a
/// test that never ends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    /// A complete response.
    Answered {
        status: u16,
        content_type: String,
        body: Value,
    },
    /// A response that began but whose body broke off.
    Truncated { status: u16, error: String },
    /// No response at all: refused, reset before the answer, or timed out.
    Failed { error: String },
}

/// One request a client made.
#[derive(Debug)]
pub struct Request {
    /// Which client made it: an index into the clients [`Load::start`] was given.
    pub client: usize,
    pub method: reqwest::Method,
    /// The `Idempotency-Key` it carried.
    pub key: Option<String>,
    pub started: Instant,
    pub finished: Instant,
    pub outcome: Outcome,
}

impl Request {
    /// The status of a complete response.
    pub fn status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Answered { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The id of the order a 201 placed.
    pub fn order_id(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Answered {
                status: 201, body, ..
            } => Some(
                body["id"]
                    .as_str()
                    .expect("a 201 names its order")
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// A 503 problem+json: the service could not do it now, and says so.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            &self.outcome,
            Outcome::Answered { status: 503, content_type, body }
                if content_type == "application/problem+json" && body["status"] == 503
        )
    }
}

/// Clients each making one request after another.
pub struct Load {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<()>>,
}

struct Shared {
    pause: Duration,
    stop: AtomicBool,
    requests: Mutex<Vec<Request>>,
}

impl Load {
    /// One client per token, each placing new orders as its user.
    pub fn placing_orders(orders_url: &str, tokens: &[String], pause: Duration) -> Self {
        let url = format!("{orders_url}/api/v1/orders");
        Self::start(tokens.to_vec(), pause, move |http, token| {
            http.post(&url)
                .bearer_auth(token)
                .header("idempotency-key", key())
                .header("content-type", "application/json")
                .body(an_order().to_string())
        })
    }

    /// One client per element of `clients`, each sending what `request` makes for it, with
    /// `pause` between its requests. A client stops at its first request without an answer:
    /// the server is gone or broken, and hammering a closed port would only bury what
    /// happened before.
    pub fn start<C, F>(clients: Vec<C>, pause: Duration, request: F) -> Self
    where
        C: Send + Sync + 'static,
        F: Fn(&reqwest::Client, &C) -> RequestBuilder + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            pause,
            stop: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        let request = Arc::new(request);
        let clients = clients
            .into_iter()
            .enumerate()
            .map(|(index, client)| {
                let http = http.clone();
                let shared = Arc::clone(&shared);
                let request = Arc::clone(&request);
                tokio::spawn(async move {
                    run_client(&shared, index, || request(&http, &client), &http).await;
                })
            })
            .collect();
        Self { shared, clients }
    }

    /// Waits up to `within` until `done` holds for the requests finished so far; whether it
    /// did.
    pub async fn wait_until(
        &self,
        within: Duration,
        mut done: impl FnMut(&[Request]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.shared.requests.lock().unwrap()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How many requests have been answered so far.
    pub fn answered(&self) -> usize {
        answered(&self.shared.requests.lock().unwrap())
    }

    /// Waits until at least `count` requests have been answered.
    pub async fn wait_for_answers(&self, count: usize) {
        let mut seen = 0;
        let enough = self
            .wait_until(Duration::from_secs(60), |requests| {
                seen = answered(requests);
                seen >= count
            })
            .await;
        assert!(enough, "only {seen} of {count} requests answered");
    }

    /// Lets each client finish the request it is making, and send no more.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for the clients to stop; every request they made, in the order they were sent.
    pub async fn finish(self) -> Vec<Request> {
        for client in self.clients {
            client.await.unwrap();
        }
        let mut requests = std::mem::take(&mut *self.shared.requests.lock().unwrap());
        requests.sort_by_key(|request| request.started);
        requests
    }
}

fn answered(requests: &[Request]) -> usize {
    requests
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Answered { .. }))
        .count()
}

async fn run_client(
    shared: &Shared,
    client: usize,
    make: impl Fn() -> RequestBuilder,
    http: &reqwest::Client,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        let request = make().build().unwrap();
        let method = request.method().clone();
        let key = request
            .headers()
            .get("idempotency-key")
            .map(|value| value.to_str().unwrap().to_owned());
        let started = Instant::now();
        let outcome = outcome(http.execute(request).await).await;
        let failed = matches!(outcome, Outcome::Failed { .. });
        shared.requests.lock().unwrap().push(Request {
            client,
            method,
            key,
            started,
            finished: Instant::now(),
            outcome,
        });
        if failed {
            return;
        }
        tokio::time::sleep(shared.pause).await;
    }
}

async fn outcome(sent: reqwest::Result<reqwest::Response>) -> Outcome {
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            return Outcome::Failed {
                error: with_causes(&error),
            };
        }
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match response.bytes().await {
        Ok(bytes) => Outcome::Answered {
            status,
            content_type,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        },
        Err(error) => Outcome::Truncated {
            status,
            error: with_causes(&error),
        },
    }
}

/// reqwest's own message says little ("error sending request"); the causes say what broke.
fn with_causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}

/// How many requests came to each kind of end, for assertion messages.
pub fn tally(requests: &[Request]) -> BTreeMap<String, usize> {
    let mut tally = BTreeMap::new();
    for request in requests {
        let kind = match &request.outcome {
            Outcome::Answered { status, .. } => status.to_string(),
            Outcome::Truncated { status, error } => format!("{status}, cut short: {error}"),
            Outcome::Failed { error } => format!("no answer: {error}"),
        };
        *tally.entry(kind).or_insert(0) += 1;
    }
    tally
}

/// `count` users known to users, as the bearer tokens their clients send. One client per
/// user: orders serialises one user's placements, so a shared user would make the clients
/// take turns instead of loading the service together.
pub async fn customers(app: &TestApp, count: usize) -> Vec<String> {
    let users = (0..count).map(|_| app.create_user(Role::User));
    futures::future::join_all(users)
        .await
        .into_iter()
        .map(|user| user.token)
        .collect()
}
