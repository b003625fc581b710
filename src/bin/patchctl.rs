//! `patchctl`: thin binary; logic lives in `patchd::dbus::ctl`.

fn main() -> std::process::ExitCode {
    patchd::dbus::ctl::main()
}
