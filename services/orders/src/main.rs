//! The orders service binary.

fn main() -> std::process::ExitCode {
    tessera_runtime::main::<orders::Orders>()
}
