//! The auth service binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    tessera_runtime::main(&auth::SPEC, |context| async move {
        let settings = tessera_config::load::<auth::Settings>(auth::SPEC.env_prefix)?;
        auth::endpoints(context, settings).await
    })
}
