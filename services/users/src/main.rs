//! The users service binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    tessera_runtime::main(&users::SPEC, |context| async move {
        let settings = tessera_config::load::<users::Settings>(users::SPEC.env_prefix)?;
        users::endpoints(context, settings).await
    })
}
