//! The runtime against the real local infrastructure: readiness follows PostgreSQL, the
//! default limits answer problem+json, and SIGTERM drains in-flight requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use tessera_runtime::{BoxError, Context, Endpoints, RunError, Service, ServiceSpec, Task};
use tessera_testkit::app::InProcess;
use tessera_testkit::database::TestDatabase;
use tessera_testkit::proxy::TcpProxy;
use tokio::sync::Notify;

const PREFIX: &str = "RT_";

static MIGRATOR: Migrator = Migrator::DEFAULT;

/// The service under test: a few routes, and background work chosen by `RT_TASK`.
struct TestService;

/// `RT_TASK`: which background work the test service runs.
#[derive(serde::Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum TaskKind {
    /// None.
    #[default]
    None,
    /// A lifelong task that returns at once.
    Ends,
    /// A lifelong task that panics.
    Panics,
    /// A one-off task that fails.
    Fails,
    /// A one-off task that succeeds.
    Succeeds,
    /// `build` refuses a setting.
    BadSetting,
}

#[derive(serde::Deserialize)]
struct TestSettings {
    #[serde(default)]
    task: TaskKind,
}

impl Service for TestService {
    const SPEC: &'static ServiceSpec = &ServiceSpec {
        name: "runtime-test",
        env_prefix: PREFIX,
        default_http_port: 0,
        default_grpc_port: 0,
        migrator: &MIGRATOR,
        descriptors: &[],
        grpc_callers: &[],
    };
    type Settings = TestSettings;

    async fn build(context: Context, settings: TestSettings) -> Result<Endpoints, BoxError> {
        // Failing tasks wait for `POST /trigger`, so the test sees the service ready first.
        let trigger = Arc::new(Notify::new());
        let pulled = {
            let trigger = Arc::clone(&trigger);
            async move { trigger.notified().await }
        };
        let task = match settings.task {
            TaskKind::None => None,
            TaskKind::Ends => Some(Task::lifelong("ends", pulled)),
            TaskKind::Panics => Some(Task::lifelong("panics", async {
                pulled.await;
                panic!("out of luck");
            })),
            TaskKind::Fails => Some(Task::once("fails", async {
                pulled.await;
                Err("no luck".into())
            })),
            TaskKind::Succeeds => Some(Task::once("succeeds", async { Ok(()) })),
            TaskKind::BadSetting => {
                return Err(tessera_config::ConfigError::setting("task", "not today").into());
            }
        };
        let mut endpoints = endpoints(context).await?;
        endpoints.http = endpoints.http.route(
            "/trigger",
            post(move || async move {
                trigger.notify_one();
                "pulled"
            }),
        );
        endpoints.tasks.extend(task);
        Ok(endpoints)
    }
}

/// Routes that exercise the limits: a slow one, and one that takes a JSON body.
fn routes() -> Router {
    Router::new()
        .route(
            "/slow/{millis}",
            get(|tessera_errors::extract::Path(millis): tessera_errors::extract::Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                "done"
            }),
        )
        .route(
            "/echo",
            post(|tessera_errors::extract::Json(body): tessera_errors::extract::Json<serde_json::Value>| async move {
                tessera_errors::extract::Json(body)
            }),
        )
}

/// An event the test service writes from a request.
#[derive(serde::Serialize, serde::Deserialize)]
struct Emitted {
    n: u32,
}

impl tessera_events::Event for Emitted {
    const TYPE: &'static str = "runtime_test.emitted";
    fn aggregate_id(&self) -> String {
        self.n.to_string()
    }
}

async fn endpoints(context: Context) -> Result<Endpoints, BoxError> {
    // Writes a row after the request has been answered, as a saga's follow-up would.
    let detacher = context.detacher();
    let db = context.db.clone();
    let later = post(move || {
        let (detacher, db) = (detacher.clone(), db.clone());
        async move {
            detacher.spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                sqlx::query("CREATE TABLE written_later (id int)")
                    .execute(&db)
                    .await
                    .unwrap();
            });
            "accepted"
        }
    });
    // Writes an event in a transaction, as a domain handler would.
    let emit = post(move || {
        let context = context.clone();
        async move {
            let mut tx = context.db.begin().await.unwrap();
            let id = context
                .outbox
                .enqueue(&mut tx, &Emitted { n: 1 })
                .await
                .unwrap();
            tx.commit().await.unwrap();
            id.to_string()
        }
    });
    Ok(Endpoints {
        http: routes().route("/emit", emit).route("/later", later),
        ..Endpoints::default()
    })
}

/// The test service, served in this process until stopped.
async fn start(env: Vec<(String, String)>) -> InProcess {
    InProcess::start::<TestService>(env).await
}

fn env_with(database_url: &str, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = tessera_testkit::service_env(PREFIX, database_url, &tessera_testkit::amqp_url());
    for (name, value) in overrides {
        tessera_testkit::set_var(&mut env, PREFIX, name, *value);
    }
    env
}

#[tokio::test]
async fn readiness_turns_503_while_postgres_is_unreachable_and_recovers() {
    let database = TestDatabase::empty().await;
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], 5432))).await;
    let url = database
        .url()
        .replace("127.0.0.1:5432", &proxy.addr().to_string());
    let env = env_with(
        &url,
        &[
            ("DB_ACQUIRE_TIMEOUT_MS", "500"),
            ("HEALTH_CHECK_TIMEOUT_MS", "500"),
        ],
    );
    let service = start(env).await;

    proxy.cut();
    service.wait_for_ready(503).await;
    let body: serde_json::Value = tessera_testkit::get(format!("{}/health/ready", service.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let postgres = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "postgres")
        .unwrap();
    assert_eq!(postgres["status"], "down", "{body}");
    // Liveness does not depend on dependencies: restarting would not bring PostgreSQL back.
    assert_eq!(
        tessera_testkit::get(format!("{}/health/live", service.http()))
            .await
            .unwrap()
            .status(),
        200
    );

    proxy.restore();
    service.wait_for_ready(200).await;
    service.stop().await.unwrap();
}

#[tokio::test]
async fn migrate_waits_for_a_database_that_cannot_be_reached_yet() {
    let database = TestDatabase::not_yet_created();
    // An address where nothing listens yet: connections are refused, as by a server that
    // is still starting.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = database
        .url()
        .replace("127.0.0.1:5432", &address.to_string());
    let (config, _) = tessera_runtime::configure::<TestService>(env_with(
        &url,
        &[("DB_ACQUIRE_TIMEOUT_MS", "300")],
    ))
    .unwrap();
    let migrating =
        tokio::spawn(async move { tessera_runtime::migrate(TestService::SPEC, &config).await });

    tokio::time::sleep(Duration::from_secs(2)).await;
    if migrating.is_finished() {
        let outcome = migrating.await.unwrap();
        panic!("gave up on an unreachable database: {outcome:?}");
    }
    let _proxy = TcpProxy::start_at(address, SocketAddr::from(([127, 0, 0, 1], 5432))).await;
    tokio::time::timeout(Duration::from_secs(30), migrating)
        .await
        .expect("migrate did not finish once the database was reachable")
        .unwrap()
        .unwrap();
    let mut connection = sqlx::PgConnection::connect(database.url()).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'messaging_outbox'",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(tables, 1, "the database was created and migrated");
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_are_shed_with_503() {
    let database = TestDatabase::empty().await;
    let service = start(env_with(database.url(), &[("CONCURRENCY_LIMIT", "1")])).await;

    let slow = tokio::spawn(tessera_testkit::get(format!(
        "{}/slow/1000",
        service.http()
    )));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = tessera_testkit::get(format!("{}/slow/0", service.http()))
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["content-type"], "application/problem+json");
    // Probes bypass the limit, so an overloaded instance is not restarted.
    assert_eq!(
        tessera_testkit::get(format!("{}/health/live", service.http()))
            .await
            .unwrap()
            .status(),
        200
    );

    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    let metrics = service.metrics().await;
    assert!(
        metrics.contains(r#"http_requests_rejected_total{reason="overloaded"} 1"#),
        "{metrics}"
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn requests_over_the_timeout_get_504() {
    let database = TestDatabase::empty().await;
    let service = start(env_with(database.url(), &[("REQUEST_TIMEOUT_MS", "200")])).await;
    let response = tessera_testkit::get(format!("{}/slow/2000", service.http()))
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:tessera:problem:timeout");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_unknown_methods_405() {
    let database = TestDatabase::empty().await;
    let service = start(env_with(database.url(), &[("BODY_LIMIT_BYTES", "32")])).await;
    let client = tessera_testkit::http_client();
    let post = |body: String| {
        client
            .post(format!("{}/echo", service.http()))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(post(r#"{"a":1}"#.to_owned()).await.unwrap().status(), 200);
    let too_big = post(format!(r#"{{"a":"{}"}}"#, "x".repeat(64)))
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert_eq!(
        too_big.headers()["content-type"],
        "application/problem+json"
    );

    let wrong_method = client
        .delete(format!("{}/echo", service.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn incoming_request_ids_are_echoed_and_missing_ones_made() {
    let database = TestDatabase::empty().await;
    let service = start(env_with(database.url(), &[])).await;
    let client = tessera_testkit::http_client();
    let url = format!("{}/slow/0", service.http());
    let echoed = client
        .get(&url)
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let made = client.get(&url).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    let oversized = client
        .get(&url)
        .header("x-request-id", "x".repeat(500))
        .send()
        .await
        .unwrap();
    assert_ne!(oversized.headers()["x-request-id"].len(), 500);
    service.stop().await.unwrap();
}

/// Set in the child process that [`sigterm_lets_the_in_flight_request_finish_and_exits_0`]
/// starts; names the child's configuration prefix.
const CHILD_MARKER: &str = "TESSERA_RUNTIME_SIGTERM_CHILD";

/// The service under test in the SIGTERM test: this same test binary, re-run as a child
/// process with only this test selected, handling real signals.
#[tokio::test]
#[ignore = "started as a child process by sigterm_lets_the_in_flight_request_finish_and_exits_0"]
async fn sigterm_child() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let (config, settings) =
        tessera_runtime::configure::<TestService>(tessera_config::vars()).unwrap();
    tessera_runtime::serve::<TestService>(
        config,
        settings,
        None,
        tessera_runtime::shutdown_signal(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_and_exits_0() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let database = TestDatabase::empty().await;
    let mut env = env_with(database.url(), &[("SHUTDOWN_DELAY_MS", "500")]);
    env.push((CHILD_MARKER.to_owned(), "1".to_owned()));
    let binary = std::env::current_exe().unwrap();
    let args = ["sigterm_child", "--exact", "--ignored", "--nocapture"];
    let mut child = tessera_testkit::process::ServiceProcess::start(
        binary.to_str().unwrap(),
        &args,
        PREFIX,
        &env,
    )
    .await;
    let http = child.http_url().to_owned();

    let in_flight = tokio::spawn(tessera_testkit::get(format!("{http}/slow/1500")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(
        Pid::from_raw(i32::try_from(child.pid()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();

    // During the shutdown delay the service still answers, but no longer claims readiness.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        tessera_testkit::get(format!("{http}/health/ready"))
            .await
            .unwrap()
            .status(),
        503
    );

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    let status = child.wait_for_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    // The listener is gone: new connections are refused.
    assert!(
        tessera_testkit::get(format!("{http}/health/live"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn events_written_by_a_request_are_published_by_the_services_relay() {
    let database = TestDatabase::empty().await;
    let service = start(env_with(database.url(), &[])).await;
    let response = tessera_testkit::http_client()
        .post(format!("{}/emit", service.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let event_id = uuid::Uuid::parse_str(&response.text().await.unwrap()).unwrap();

    let pool = sqlx::PgPool::connect(database.url()).await.unwrap();
    let mut sent = false;
    for _ in 0..200 {
        sent = sqlx::query_scalar(
            "SELECT sent_at IS NOT NULL FROM messaging_outbox WHERE event_id = $1",
        )
        .bind(event_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        if sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent, "the relay never confirmed the event");
    let metrics = service.metrics().await;
    assert!(
        metrics.contains("messaging_outbox_confirmed_total 1"),
        "{metrics}"
    );
    pool.close().await;
    service.stop().await.unwrap();
}

/// Starts the test service with `RT_TASK=task` and a shutdown delay long enough to look at it
/// while it stops.
async fn start_with_task(database: &TestDatabase, task: &str) -> InProcess {
    start(env_with(
        database.url(),
        &[("TASK", task), ("SHUTDOWN_DELAY_MS", "3000")],
    ))
    .await
}

/// A failed task takes the service out of readiness (naming the task), is counted, and
/// stops the service with an error naming it.
async fn assert_task_failure_stops_the_service(service: InProcess, task: &str, reason: &str) {
    let pulled = tessera_testkit::http_client()
        .post(format!("{}/trigger", service.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200);
    service.wait_for_ready(503).await;
    let report: serde_json::Value =
        tessera_testkit::get(format!("{}/health/ready", service.http()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let tasks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tasks")
        .unwrap()
        .clone();
    assert_eq!(tasks["status"], "down", "{report}");
    let label = format!("task=\"{task}\"");
    assert_eq!(
        service
            .counter("service_task_failures_total", &[&label])
            .await,
        1.0
    );
    match service.wait_until_stopped().await {
        Err(RunError::TaskFailed(failure)) => {
            assert_eq!(failure.task, task);
            assert!(failure.reason.contains(reason), "{failure}");
        }
        other => panic!("expected the task failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lifelong_task_that_ends_early_stops_the_service_with_an_error() {
    let database = TestDatabase::empty().await;
    let service = start_with_task(&database, "ends").await;
    assert_task_failure_stops_the_service(service, "ends", "ended before").await;
}

#[tokio::test]
async fn a_task_that_panics_stops_the_service_with_its_message() {
    let database = TestDatabase::empty().await;
    let service = start_with_task(&database, "panics").await;
    assert_task_failure_stops_the_service(service, "panics", "out of luck").await;
}

#[tokio::test]
async fn a_one_off_task_that_fails_stops_the_service() {
    let database = TestDatabase::empty().await;
    let service = start_with_task(&database, "fails").await;
    assert_task_failure_stops_the_service(service, "fails", "no luck").await;
}

#[tokio::test]
async fn a_one_off_task_that_succeeds_leaves_the_service_ready() {
    let database = TestDatabase::empty().await;
    let service = start_with_task(&database, "succeeds").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(service.ready_status().await, 200);
    let metrics = service.metrics().await;
    assert!(
        metrics.contains(r#"service_task_failures_total{task="succeeds"} 0"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"service_task_failures_total{task="relay"} 0"#));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_setting_refused_by_build_is_a_configuration_error_with_the_prefix() {
    let database = TestDatabase::empty().await;
    let env = env_with(database.url(), &[("TASK", "bad_setting")]);
    let (config, settings) = tessera_runtime::configure::<TestService>(env).unwrap();
    let outcome = tessera_runtime::serve::<TestService>(config, settings, None, async {}).await;
    match outcome {
        Err(RunError::Config(error)) => assert_eq!(error.variable, "RT_TASK"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn detached_work_finishes_before_the_service_stops() {
    let database = TestDatabase::empty().await;
    let service = start(env_with(database.url(), &[])).await;
    let response = tessera_testkit::http_client()
        .post(format!("{}/later", service.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Stopped at once: the write is still 500 ms away, and must happen all the same.
    service.stop().await.unwrap();
    let pool = sqlx::PgPool::connect(database.url()).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM written_later")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the table exists, so the detached write ran");
    pool.close().await;
}

#[test]
fn in_a_kubernetes_pod_the_shutdown_delay_defaults_to_draining_endpoints() {
    let mut env = env_with("postgres://unused/unused", &[]);
    let (outside, _) = tessera_runtime::configure::<TestService>(env.clone()).unwrap();
    assert_eq!(outside.shutdown_delay(), Duration::ZERO);
    env.push(("KUBERNETES_SERVICE_HOST".to_owned(), "10.96.0.1".to_owned()));
    let (inside, _) = tessera_runtime::configure::<TestService>(env).unwrap();
    assert_eq!(inside.shutdown_delay(), Duration::from_secs(5));
}
