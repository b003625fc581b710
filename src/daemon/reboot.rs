//! The engine's reboot port over systemd's D-Bus API, with the policy's reboot
//! inhibitors and the kernel's reboot(2) where no systemd answers.

use std::sync::{Arc, Mutex};

use crate::audit::{Actor, AuditLog, Entry};
use crate::clock::Clock;
use crate::dbus::Bus;
use crate::engine::ports::{PortError, Reboot};
use crate::fetch::BoxFuture;
use crate::paths::Paths;
use crate::policy::inhibit::{reboot_blockers, LoginQuery};
use crate::policy::InhibitorConfig;

/// Reboot through systemd's D-Bus API (`StartUnit("reboot.target",
/// "replace-irreversibly")`, what `systemctl reboot` does), after asking the policy's
/// reboot inhibitors. On a machine without systemd (nothing answers for
/// `org.freedesktop.systemd1` on the system bus, or no system bus at all) it falls back
/// to the kernel: `sync`, then `reboot(2)`, with a warning in the log and a
/// `reboot_fallback` audit record. A refusal from a running systemd is returned as an
/// error, never gone around.
pub struct SystemdReboot {
    pub inhibitors: InhibitorConfig,
    pub login: Option<Arc<dyn LoginQuery>>,
    pub paths: Paths,
    /// Where systemd answers: the system bus, or a private bus (tests serve a fake
    /// `org.freedesktop.systemd1` there).
    pub bus: Bus,
    /// Carries out the fallback ([`SyscallReboot`] in the daemon; tests pass a fake).
    pub kernel: Arc<dyn KernelReboot>,
    /// Where the fallback is noted (the daemon's audit log; `None` in tests that do not
    /// look at it).
    pub audit: Option<Arc<Mutex<AuditLog>>>,
    pub clock: Arc<dyn Clock>,
}

/// The last resort of a reboot: the kernel's own, with no init system involved.
pub trait KernelReboot: Send + Sync {
    /// Flush file systems and restart the machine. Returns only on failure.
    fn sync_and_reboot(&self) -> std::io::Error;
}

/// `sync(2)` then `reboot(2)` with `RB_AUTOBOOT`: what `reboot -f` does. Chosen over
/// running `/sbin/reboot` because without systemd that command means something else on
/// each init system (busybox signals PID 1, sysvinit writes to /run/initctl) and may
/// need an init that handles it; the syscall needs only `CAP_SYS_BOOT`. patchd has
/// already persisted its state and armed the bootloader with fsync, and journaled file
/// systems replay what `sync` leaves, as after a power cut.
pub struct SyscallReboot;

impl KernelReboot for SyscallReboot {
    fn sync_and_reboot(&self) -> std::io::Error {
        nix::unistd::sync();
        match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT) {
            Err(e) => std::io::Error::from(e),
            Ok(never) => match never {},
        }
    }
}

/// What asking systemd for the reboot came to.
#[derive(Debug, PartialEq, Eq)]
enum SystemdAnswer {
    /// systemd is not there to ask (no bus, or nobody owns its name): fall back.
    Absent(String),
    /// systemd answered and refused (polkit, a failing job): report, do not go around it.
    Refused(String),
}

/// Only an absent systemd justifies the kernel fallback: a refusal from a running
/// systemd (policy, permissions) must not be overridden behind its back.
fn classify(e: &zbus::Error) -> SystemdAnswer {
    const ABSENT: [&str; 3] = [
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.UnknownObject",
    ];
    let absent = match e {
        zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => true,
        zbus::Error::MethodError(name, _, _) => ABSENT.contains(&name.as_str()),
        zbus::Error::FDO(f) => matches!(
            **f,
            zbus::fdo::Error::ServiceUnknown(_)
                | zbus::fdo::Error::NameHasNoOwner(_)
                | zbus::fdo::Error::UnknownObject(_)
        ),
        _ => false,
    };
    if absent {
        SystemdAnswer::Absent(e.to_string())
    } else {
        SystemdAnswer::Refused(e.to_string())
    }
}

/// Why the kernel should reboot the machine, if it should: systemd is absent, and it was
/// looked for on the system bus. A private bus (`--bus-address`) belongs to tests or to
/// a setup that brings its own systemd stand-in; there patchd never reboots the machine
/// by itself (a test run as root would otherwise restart its host).
fn kernel_fallback(bus: &Bus, e: &zbus::Error) -> Option<String> {
    match (bus, classify(e)) {
        (Bus::System, SystemdAnswer::Absent(why)) => Some(why),
        _ => None,
    }
}

impl SystemdReboot {
    async fn ask_systemd(&self) -> Result<(), zbus::Error> {
        let conn = match &self.bus {
            Bus::System => zbus::Connection::system().await?,
            Bus::Address(a) => {
                zbus::connection::Builder::address(a.as_str())?
                    .build()
                    .await?
            }
        };
        conn.call_method(
            Some("org.freedesktop.systemd1"),
            "/org/freedesktop/systemd1",
            Some("org.freedesktop.systemd1.Manager"),
            "StartUnit",
            &("reboot.target", "replace-irreversibly"),
        )
        .await?;
        Ok(())
    }

    /// The audit record comes first: after a successful `reboot(2)` nothing runs.
    fn fallback(&self, reason: &str, why: &str) -> PortError {
        tracing::warn!(
            reason,
            systemd = why,
            "systemd is not reachable on the bus: rebooting with sync + reboot(2)"
        );
        if let Some(audit) = &self.audit {
            let entry = Entry::new(
                "reboot_fallback",
                Actor::Daemon,
                format!("systemd not reachable ({why}); reboot(2) for: {reason}"),
            );
            let now = self.clock.now();
            if let Err(e) = audit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(entry, now)
            {
                tracing::error!(error = %e, "audit record reboot_fallback not written");
            }
        }
        PortError::new("reboot(2) fallback", self.kernel.sync_and_reboot())
    }
}

impl Reboot for SystemdReboot {
    fn inhibitors(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            reboot_blockers(&self.inhibitors, self.login.as_deref(), &self.paths).await
        })
    }

    fn reboot<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            tracing::warn!(reason, "rebooting");
            match self.ask_systemd().await {
                Ok(()) => Ok(()),
                Err(e) => match kernel_fallback(&self.bus, &e) {
                    Some(why) => Err(self.fallback(reason, &why)),
                    None => Err(PortError::new("reboot via systemd", e)),
                },
            }
        })
    }
}

/// The reboot port of a simulated device (the file bootloader) served on a private bus,
/// as docs/setup.md "Try it on one machine" runs it: when nothing answers for systemd
/// there (or the bus cannot start it), the "reboot" is the daemon stopping, as it would
/// at a real reboot — `patchd boot simulate-reboot` then plays the bootloader and the
/// next `patchd run` finds the new slot booted. A systemd stand-in on the bus (the tests'
/// fake) is still asked first, and a refusal from it is still an error. The machine
/// itself is never rebooted: the inner port never falls back to the kernel on a private
/// bus.
pub struct SimulatedReboot(pub SystemdReboot);

impl SimulatedReboot {
    fn no_systemd(e: &zbus::Error) -> bool {
        let spawn = matches!(e, zbus::Error::MethodError(name, _, _)
            if name.as_str().starts_with("org.freedesktop.DBus.Error.Spawn."));
        spawn || matches!(classify(e), SystemdAnswer::Absent(_))
    }
}

impl Reboot for SimulatedReboot {
    fn inhibitors(&self) -> BoxFuture<'_, Vec<String>> {
        self.0.inhibitors()
    }

    fn reboot<'a>(&'a self, reason: &'a str) -> BoxFuture<'a, Result<(), PortError>> {
        Box::pin(async move {
            match self.0.ask_systemd().await {
                Ok(()) => Ok(()),
                Err(e) if Self::no_systemd(&e) => {
                    tracing::warn!(
                        reason,
                        "simulated device: no systemd on the private bus; stopping as a reboot \
                         would. Run `patchd boot simulate-reboot`, then start patchd again"
                    );
                    Ok(())
                }
                Err(e) => Err(PortError::new("reboot via systemd", e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SimClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the kernel reboots it was asked for and fails them (a real one would not
    /// return).
    #[derive(Default)]
    struct FakeKernel(AtomicUsize);

    impl KernelReboot for FakeKernel {
        fn sync_and_reboot(&self) -> std::io::Error {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::io::Error::other("fake kernel: not rebooting")
        }
    }

    fn adapter(
        bus: Bus,
        kernel: Arc<FakeKernel>,
        audit: Option<Arc<Mutex<AuditLog>>>,
    ) -> SystemdReboot {
        SystemdReboot {
            inhibitors: InhibitorConfig::default(),
            login: None,
            paths: Paths::new("/"),
            bus,
            kernel,
            audit,
            clock: Arc::new(SimClock::new("2026-01-01T00:00:00Z".parse().unwrap())),
        }
    }

    fn io_error() -> zbus::Error {
        zbus::Error::InputOutput(Arc::new(std::io::Error::from(std::io::ErrorKind::NotFound)))
    }

    #[test]
    fn no_bus_or_no_systemd_falls_back_anything_else_does_not() {
        assert!(matches!(classify(&io_error()), SystemdAnswer::Absent(_)));
        let unknown = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown(
            "The name org.freedesktop.systemd1 was not provided".into(),
        )));
        assert!(matches!(classify(&unknown), SystemdAnswer::Absent(_)));
        let denied = zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied(
            "polkit said no".into(),
        )));
        assert!(matches!(classify(&denied), SystemdAnswer::Refused(_)));
        let failed = zbus::Error::Failure("job failed".into());
        assert!(matches!(classify(&failed), SystemdAnswer::Refused(_)));

        assert!(kernel_fallback(&Bus::System, &io_error()).is_some());
        assert!(kernel_fallback(&Bus::System, &unknown).is_some());
        assert!(kernel_fallback(&Bus::System, &denied).is_none());
        // A private bus never leads to the kernel, systemd or not.
        let private = Bus::Address("unix:path=/nonexistent".into());
        assert!(kernel_fallback(&private, &io_error()).is_none());
        assert!(kernel_fallback(&private, &unknown).is_none());
    }

    #[tokio::test]
    async fn private_bus_without_systemd_is_an_error_and_never_reaches_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = Arc::new(FakeKernel::default());
        let missing = format!("unix:path={}", dir.path().join("no-bus").display());
        let r = adapter(Bus::Address(missing), kernel.clone(), None);
        let err = r.reboot("switch to b").await.unwrap_err();
        assert!(err.to_string().contains("reboot via systemd"), "{err}");
        assert_eq!(kernel.0.load(Ordering::SeqCst), 0, "kernel reboot called");
    }

    #[test]
    fn fallback_audits_then_asks_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Arc::new(Mutex::new(
            AuditLog::open(dir.path().join("audit.log"), Default::default()).unwrap(),
        ));
        let kernel = Arc::new(FakeKernel::default());
        let r = adapter(Bus::System, kernel.clone(), Some(audit));
        let err = r.fallback("switch to b", "no system bus");
        assert_eq!(
            kernel.0.load(Ordering::SeqCst),
            1,
            "kernel reboot not called"
        );
        assert!(err.to_string().contains("reboot(2)"), "{err}");
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert!(text.contains("reboot_fallback"), "{text}");
        assert!(text.contains("switch to b"), "{text}");
        assert!(text.contains("no system bus"), "{text}");
    }
}
