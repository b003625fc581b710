//! `patchctl`: thin binary; logic lives in `patchd::cli::ctl`.

fn main() -> std::process::ExitCode {
    patchd::cli::ctl::main()
}
