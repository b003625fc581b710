//! The etcd v3 backend of [`RebootLock`]: a counting semaphore per group, kept in the
//! cluster the fleet already runs.
//!
//! Keys (`prefix` from `[fleet.etcd]`, default `/patchd/reboot`):
//! - `<prefix>/<group>/slots` — how many devices of the group may hold a slot at once,
//!   a decimal number the operator writes (`etcdctl put /patchd/reboot/db-eu1/slots 2`);
//!   missing means [`DEFAULT_SLOTS`], `0` freezes the group.
//! - `<prefix>/<group>/holders/<device id>` — one per holder, attached to that device's
//!   lease; the value is when it took the slot (for whoever reads it with etcdctl).
//!
//! Taking a slot is one transaction: "no holder key changed since the read at revision
//! R, and the slots key is still the one read" → put our key. Two devices that both saw
//! one free slot cannot both succeed: the first put moves a holder key past R and fails
//! the other's compare (see [`semaphore`]).
//!
//! Leases: the holder key lives as long as its lease; a task of this process renews the
//! lease every TTL/3 ([`keeper`]). A machine that vanished (power, network, crash) stops
//! renewing and its slot frees itself after the TTL; a machine that is up keeps it, also
//! when its update failed — that is what pauses the group until someone looks; the
//! operator frees it with `patchctl fleet release` (which calls [`RebootLock::release`]),
//! or `etcdctl del <prefix>/<group>/holders/<id>`. After a restart or reboot the new
//! process finds its holder key and renews the same lease (the TTL must outlast a
//! reboot, hence the long default), so the slot is held through reboot and probation.

mod gateway;
mod keeper;
mod semaphore;
pub mod settings;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::{Certificate, Identity};

pub use semaphore::DEFAULT_SLOTS;
pub use settings::{EtcdSettings, RawEtcd};

use super::{GroupSlots, LockAnswer, LockError, Occupancy, RebootLock};
use crate::fetch::BoxFuture;
use crate::setting::InvalidSetting;
use gateway::Gateway;
use semaphore::Keys;

/// One device's reboot lock in one group of an etcd cluster.
#[derive(Debug)]
pub struct EtcdLock {
    core: Arc<Core>,
    /// The lease renewal task; stopped when the lock is dropped (the process is gone).
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Core {
    gw: Gateway,
    keys: Keys,
    id: String,
    group: String,
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The lease our holder key is attached to: the one to renew.
    held: Option<i64>,
    /// A lease granted for a put that did not happen (yet).
    spare: Option<i64>,
    /// Whether we looked for a holder key left by an earlier run of this device.
    looked: bool,
    /// What went wrong with the last renewal, while it stays wrong.
    trouble: Option<String>,
}

impl Core {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EtcdLock {
    /// The lock of `device_id` in `group`, talking to the cluster of `settings`. Reads
    /// the TLS files now, so a wrong path fails here, naming its key. Inside a tokio
    /// runtime it starts renewing a slot held from before at once; otherwise on the
    /// first request.
    pub fn new(
        settings: &EtcdSettings,
        device_id: &str,
        group: &str,
    ) -> Result<Self, InvalidSetting> {
        check_name("fleet.group", "group", group)?;
        check_name("fleet device id", "device id", device_id)?;
        let http = http_client(settings)?;
        let core = Arc::new(Core {
            gw: Gateway::new(http, settings.endpoints.clone(), settings.request_timeout),
            keys: Keys::new(&settings.prefix, group, device_id),
            id: device_id.to_owned(),
            group: group.to_owned(),
            ttl: settings.lease_ttl,
            state: Mutex::new(State::default()),
        });
        let lock = Self {
            core,
            keeper: Mutex::new(None),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            lock.ensure_keeper();
        }
        Ok(lock)
    }

    pub fn device_id(&self) -> &str {
        &self.core.id
    }

    pub fn group(&self) -> &str {
        &self.core.group
    }

    /// What threatens the slot this device holds: the last renewal of its lease failed
    /// (etcd unreachable, no quorum), or the lease ran out and the slot is gone. For
    /// status and the audit log (the renewals run in the background and only log);
    /// `None` while renewals succeed.
    pub fn renewal_trouble(&self) -> Option<String> {
        self.core.state().trouble.clone()
    }

    /// Start the renewal task unless it runs. Called from async contexts only.
    fn ensure_keeper(&self) {
        let mut k = self.keeper.lock().unwrap_or_else(PoisonError::into_inner);
        if k.as_ref().is_none_or(|h| h.is_finished()) {
            *k = Some(tokio::spawn(keeper::run(self.core.clone())));
        }
    }
}

impl Drop for EtcdLock {
    fn drop(&mut self) {
        if let Some(h) = self
            .keeper
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            h.abort();
        }
    }
}

impl RebootLock for EtcdLock {
    fn acquire(&self) -> BoxFuture<'_, Result<LockAnswer, LockError>> {
        Box::pin(async move {
            self.ensure_keeper();
            semaphore::acquire(&self.core).await
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<(), LockError>> {
        Box::pin(async move {
            self.ensure_keeper();
            semaphore::release(&self.core).await
        })
    }

    fn occupancy(&self) -> BoxFuture<'_, Result<Option<Occupancy>, LockError>> {
        Box::pin(async move {
            let s = self.slots().await?;
            Ok(Some(Occupancy {
                slots: Some(s.slots),
                holders: s.holders,
            }))
        })
    }
}

impl EtcdLock {
    /// How many slots the group has and who holds them ("2 of 2 taken by a, b").
    pub async fn slots(&self) -> Result<GroupSlots, LockError> {
        let view = semaphore::read_group(&self.core).await?;
        Ok(view.report(&self.core.group))
    }
}

/// Group names and device ids become one key segment each.
fn check_name(key: &str, what: &str, name: &str) -> Result<(), InvalidSetting> {
    if name.is_empty()
        || name.len() > 128
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(InvalidSetting::new(
            key,
            format!("{what} {name:?} must be 1 to 128 characters without / or control characters"),
        ));
    }
    Ok(())
}

/// reqwest with rustls; with a CA bundle only that CA is trusted (a lock cluster has its
/// own CA; a public one would let anyone with a public certificate pose as it).
fn http_client(s: &EtcdSettings) -> Result<reqwest::Client, InvalidSetting> {
    let endpoints = u32::try_from(s.endpoints.len()).unwrap_or(u32::MAX).max(1);
    // Each endpoint gets its share of the request time to connect, so a silent one
    // (packets dropped) leaves time for the others.
    let connect = (s.request_timeout / endpoints).max(Duration::from_millis(500));
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(connect)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &s.ca {
        let pem = settings::read_file("ca", ca)?;
        let bad =
            |why: String| InvalidSetting::new("fleet.etcd.ca", format!("{}: {why}", ca.display()));
        let certs =
            Certificate::from_pem_bundle(&pem).map_err(|e| bad(gateway::error_chain(&e)))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&s.cert, &s.key) {
        let mut pem = settings::read_file("cert", cert)?;
        pem.push(b'\n');
        pem.extend(settings::read_file("key", key)?);
        let id = Identity::from_pem(&pem).map_err(|e| {
            InvalidSetting::new(
                "fleet.etcd.cert",
                format!(
                    "{} with key {}: not a PEM certificate and private key: {}",
                    cert.display(),
                    key.display(),
                    gateway::error_chain(&e)
                ),
            )
        })?;
        b = b.identity(id);
    }
    b.build()
        .map_err(|e| InvalidSetting::new("fleet.etcd", gateway::error_chain(&e)))
}
