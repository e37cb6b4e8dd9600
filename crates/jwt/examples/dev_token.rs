//! Mints a throwaway signing key and one access token, for driving a service without the
//! auth service (benchmarks, manual tests).
//!
//! ```text
//! cargo run -p tessera-jwt --example dev_token -- <dir> <user-id> <role> [issuer] [audience]
//! ```
//!
//! Writes the public key set to `<dir>/.well-known/jwks.json` (serve `<dir>` over HTTP and
//! point `*_JWKS_URL` at it) and prints a token valid for one hour.

use std::process::ExitCode;
use std::time::Duration;

use tessera_jwt::{Role, Signer, SigningKey};
use uuid::Uuid;

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("dev_token: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<String, String> {
    let [dir, user, role, rest @ ..] = args.as_slice() else {
        return Err("usage: dev_token <dir> <user-id> <role> [issuer] [audience]".to_owned());
    };
    let user = Uuid::parse_str(user).map_err(|e| format!("user id: {e}"))?;
    let role: Role = role.parse().map_err(|e| format!("role: {e}"))?;
    let issuer = rest.first().map_or("tessera-auth", String::as_str);
    let audience = rest.get(1).map_or("tessera", String::as_str);

    let key = SigningKey::generate(format!("dev-{}", Uuid::now_v7().simple()));
    let signer = Signer::new(vec![key], issuer, audience, Duration::from_secs(3600))
        .map_err(|e| e.to_string())?;
    let well_known = std::path::Path::new(dir).join(".well-known");
    std::fs::create_dir_all(&well_known).map_err(|e| format!("{dir}: {e}"))?;
    let jwks = serde_json::to_vec(&signer.jwks()).map_err(|e| e.to_string())?;
    std::fs::write(well_known.join("jwks.json"), jwks).map_err(|e| format!("{dir}: {e}"))?;
    signer
        .issue(user, role)
        .map(|issued| issued.token)
        .map_err(|e| e.to_string())
}
