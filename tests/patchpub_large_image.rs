//! Sizes are u64 end to end on the publisher side: an image past 4 GiB is compressed,
//! hashed and described with its exact size, and `verify` decompresses it back to the
//! same size and sha256.

use patchd::publish::{AddRelease, InitOptions, Repo};

#[tokio::test]
async fn image_past_4_gib_keeps_its_exact_size() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::init(
        tmp.path().join("repo"),
        &InitOptions::new(tmp.path().join("keys")),
    )
    .unwrap();
    let img = tmp.path().join("big.img");
    // Sparse: 4 GiB + 4097 bytes, with data at both ends so truncation would show.
    let size: u64 = (4 << 30) + 4097;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&img).unwrap();
        f.write_all(b"start").unwrap();
        f.seek(SeekFrom::Start(size - 3)).unwrap();
        f.write_all(b"end").unwrap();
    }
    assert_eq!(std::fs::metadata(&img).unwrap().len(), size);
    let m = repo
        .add_release(&AddRelease::new("acme", "1.0.0".parse().unwrap(), &img))
        .unwrap();
    assert_eq!(m.images[0].size, size);
    assert!(m.images[0].size > u64::from(u32::MAX));
    let report = repo.verify().await.unwrap();
    assert_eq!(report.releases, vec!["acme/1.0.0"]);
}
