//! The auth service binary.

fn main() -> std::process::ExitCode {
    tessera_runtime::main::<auth::Auth>()
}
