//! `patchd`: thin binary; logic lives in the library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("patchd: not implemented yet")
}
