//! `patchpub`: thin binary; logic lives in the library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("patchpub: not implemented yet")
}
