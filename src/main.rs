#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    lifeboat::cli::main()
}
