//! The TLS set-up every HTTP client of patchd shares (the repository's, the fleet lock
//! service's): rustls, the system roots unless turned off, and an extra CA bundle.

/// Which certificates an HTTPS client trusts.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra trusted CAs (PEM bundle) on top of the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Trust only `extra_ca_pem`, not the system roots (private PKI, tests).
    pub disable_system_roots: bool,
}

impl TlsOptions {
    /// `builder` with rustls and these roots; the error says what is wrong with the
    /// bundle.
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
        let mut builder = builder
            .use_rustls_tls()
            .tls_built_in_root_certs(!self.disable_system_roots);
        if let Some(pem) = &self.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("extra CA bundle: {}", super::transfer::chain(&e)))?;
            if certs.is_empty() {
                return Err("extra CA bundle holds no certificate".into());
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        Ok(builder)
    }
}
