//! `patchd`: thin binary; its command line lives in `patchd::cli::patchd`.

fn main() -> std::process::ExitCode {
    patchd::cli::patchd::main()
}
