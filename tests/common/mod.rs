//! Shared helpers for integration tests (`mod common;` in a test file).

#![allow(dead_code)]

pub mod disk;
pub mod http;
pub mod image;

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for tests.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// True when running as root; otherwise prints the skip reason.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        println!("skipped: {test} needs root");
        false
    }
}

/// True when every tool is on PATH; otherwise prints the skip reason.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    for t in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            .unwrap_or(false)
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| std::path::Path::new(d).join(t).is_file());
        if !found {
            println!("skipped: {test} needs {t}");
            return false;
        }
    }
    true
}
