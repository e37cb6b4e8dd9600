//! A token issuer for tests: a signing key and its JWKS served over HTTP, as auth serves it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use tessera_jwt::{Claims, JwkSet, Role, Signer, SigningKey, VerifierSettings};
use uuid::Uuid;

/// An issuer for tests: a fresh signing key and a JWKS served on 127.0.0.1:<free port>.
pub struct TestIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    signer: RwLock<Signer>,
    fetches: AtomicUsize,
}

impl TestIssuer {
    /// The `iss` of its tokens.
    pub const ISSUER: &'static str = "tessera-auth-test";
    /// The `aud` of its tokens.
    pub const AUDIENCE: &'static str = "tessera";
    /// How long its tokens live.
    pub const TTL: Duration = Duration::from_secs(15 * 60);

    /// Starts serving `GET /.well-known/jwks.json` from the current key set.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            signer: RwLock::new(signer(SigningKey::generate(new_kid()), Vec::new())),
            fetches: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            shared,
            addr,
            server,
        }
    }

    /// Where the JWKS is served.
    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// The server's address, e.g. to put a [`TcpProxy`](crate::proxy::TcpProxy) in front.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A valid token for `user` with `role`, signed with the active key.
    pub fn token(&self, user: Uuid, role: Role) -> String {
        self.signer().issue(user, role).unwrap().token
    }

    /// Valid claims for `user` with `role`, to alter before [`TestIssuer::token_with`].
    pub fn claims(&self, user: Uuid, role: Role) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            iss: Self::ISSUER.to_owned(),
            aud: Self::AUDIENCE.to_owned(),
            sub: user,
            role,
            iat: now,
            exp: now + Self::TTL.as_secs() as i64,
            jti: Uuid::now_v7(),
        }
    }

    /// `claims` exactly as given, signed with the active key.
    pub fn token_with(&self, claims: &Claims) -> String {
        self.signer().sign(claims).unwrap()
    }

    /// Makes a new key the active one, keeps the old ones published, and returns its kid.
    pub fn rotate(&self) -> String {
        let key = SigningKey::generate(new_kid());
        let kid = key.kid().to_owned();
        let mut current = self.shared.signer.write().unwrap();
        *current = signer(key, current.jwks().keys);
        kid
    }

    /// Makes a new key the only one published, as when a leaked key is withdrawn, and
    /// returns its kid.
    pub fn replace_keys(&self) -> String {
        let key = SigningKey::generate(new_kid());
        let kid = key.kid().to_owned();
        *self.shared.signer.write().unwrap() = signer(key, Vec::new());
        kid
    }

    /// The kid of the key that signs now.
    pub fn active_kid(&self) -> String {
        self.signer().active_kid().to_owned()
    }

    /// The keys served now.
    pub fn jwks(&self) -> JwkSet {
        self.signer().jwks()
    }

    /// Settings for a verifier of this issuer's tokens, refetching at most every 50 ms.
    pub fn verifier_settings(&self) -> VerifierSettings {
        VerifierSettings {
            jwks_url: Some(self.jwks_url()),
            jwks_min_refetch: Duration::from_millis(50),
            ..VerifierSettings::new(Self::ISSUER, Self::AUDIENCE)
        }
    }

    /// How many times the JWKS was served.
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    fn signer(&self) -> std::sync::RwLockReadGuard<'_, Signer> {
        self.shared.signer.read().unwrap()
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve_jwks(State(shared): State<Arc<Shared>>) -> Json<JwkSet> {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    Json(shared.signer.read().unwrap().jwks())
}

fn signer(active: SigningKey, retired: Vec<tessera_jwt::Jwk>) -> Signer {
    Signer::new(
        vec![active],
        TestIssuer::ISSUER,
        TestIssuer::AUDIENCE,
        TestIssuer::TTL,
    )
    .unwrap()
    .with_published(retired)
}

fn new_kid() -> String {
    format!("test-{}", Uuid::new_v4().simple())
}
