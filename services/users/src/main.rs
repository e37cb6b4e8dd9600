//! The users service binary.

fn main() -> std::process::ExitCode {
    tessera_runtime::main::<users::Users>()
}
