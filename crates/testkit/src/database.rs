//! A fresh database per test.

use sqlx::migrate::Migrator;
use sqlx::{Connection, Executor, PgConnection};

/// A database that exists for one test and is dropped with it.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// An empty database with a unique name.
    pub async fn empty() -> Self {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin().await;
        run(&mut admin, format!(r#"CREATE DATABASE "{name}""#)).await;
        Self::named(name)
    }

    /// A unique name for a database that does not exist yet (for code that creates it);
    /// dropped, if it was created, with the handle.
    pub fn not_yet_created() -> Self {
        Self::named(format!("test_{}", uuid::Uuid::new_v4().simple()))
    }

    /// A database with `migrator`'s migrations applied, copied from a template database that
    /// is migrated once per distinct set of migrations, so each test pays only for a copy.
    pub async fn migrated(migrator: &Migrator) -> Self {
        let template = ensure_template(migrator).await;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin().await;
        run(
            &mut admin,
            format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#),
        )
        .await;
        Self::named(name)
    }

    fn named(name: String) -> Self {
        let url = database_url(&name);
        Self { name, url }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection URL for it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async code; a short-lived runtime on its own thread does the I/O.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut admin = admin().await;
                    let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                    admin.execute(sqlx::AssertSqlSafe(sql)).await.map(drop)
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Runs a statement built at run time (database names cannot be bind parameters).
async fn run(connection: &mut PgConnection, sql: String) {
    connection.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
}

async fn admin() -> PgConnection {
    PgConnection::connect(&crate::postgres_url()).await.unwrap()
}

/// The test server's URL with its database replaced by `name`.
fn database_url(name: &str) -> String {
    let base = crate::postgres_url();
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(server, _)| server);
    format!("{server}/{name}")
}

/// Creates `tpl_<checksum>` with the migrations applied, unless it exists. An advisory lock
/// serialises the test processes that race to create it.
async fn ensure_template(migrator: &Migrator) -> String {
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for migration in migrator.iter() {
        for byte in migration
            .checksum
            .iter()
            .chain(&migration.version.to_le_bytes())
        {
            digest = (digest ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let template = format!("tpl_{digest:016x}");
    let mut admin = admin().await;
    admin
        .execute("SELECT pg_advisory_lock(7301)")
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        let building = format!("{template}_building");
        run(
            &mut admin,
            format!(r#"DROP DATABASE IF EXISTS "{building}""#),
        )
        .await;
        run(&mut admin, format!(r#"CREATE DATABASE "{building}""#)).await;
        let mut connection = PgConnection::connect(&database_url(&building))
            .await
            .unwrap();
        migrator.run(&mut connection).await.unwrap();
        connection.close().await.unwrap();
        run(
            &mut admin,
            format!(r#"ALTER DATABASE "{building}" RENAME TO "{template}""#),
        )
        .await;
    }
    admin
        .execute("SELECT pg_advisory_unlock(7301)")
        .await
        .unwrap();
    template
}
