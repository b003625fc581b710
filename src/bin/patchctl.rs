//! `patchctl`: thin binary; logic lives in the library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("patchctl: not implemented yet")
}
