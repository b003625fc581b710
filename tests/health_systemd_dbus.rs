//! Required units are asked of systemd over D-Bus (Manager.GetUnit + Unit.ActiveState).
//! No systemd runs here, so the test serves a fake `org.freedesktop.systemd1` on a private
//! bus started with `dbus-daemon --session` (`support::SessionBus`).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use patchd::config::HealthConfig;
use patchd::health::{HealthError, HealthPlan, SystemdUnits, UnitQuery, Verdict};
use patchd::paths::Paths;
use support::SessionBus;
use zbus::zvariant::OwnedObjectPath;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum SdError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchUnit(String),
}

struct Manager {
    units: BTreeMap<String, String>,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    async fn get_unit(&self, name: &str) -> Result<OwnedObjectPath, SdError> {
        match self.units.get(name) {
            Some(p) => Ok(OwnedObjectPath::try_from(p.as_str()).map_err(zbus::Error::from)?),
            None => Err(SdError::NoSuchUnit(format!("Unit {name} not loaded."))),
        }
    }
}

struct Unit {
    state: String,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    fn active_state(&self) -> String {
        self.state.clone()
    }
}

async fn fake_systemd(bus: &SessionBus, units: &[(&str, &str)]) -> zbus::Connection {
    let mut map = BTreeMap::new();
    let mut b = bus.service("org.freedesktop.systemd1");
    for (i, (name, state)) in units.iter().enumerate() {
        let path = format!("/org/freedesktop/systemd1/unit/u{i}");
        map.insert(name.to_string(), path.clone());
        b = b
            .serve_at(
                path,
                Unit {
                    state: state.to_string(),
                },
            )
            .unwrap();
    }
    b.serve_at("/org/freedesktop/systemd1", Manager { units: map })
        .unwrap()
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn unit_states_come_from_systemd_over_dbus() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let _server = fake_systemd(
        &bus,
        &[
            ("nginx.service", "active"),
            ("db.service", "failed"),
            ("cron.service", "activating"),
        ],
    )
    .await;
    let sd = SystemdUnits::new(bus.client().await);
    assert_eq!(sd.active_state("nginx.service").await.unwrap(), "active");
    assert_eq!(sd.active_state("db.service").await.unwrap(), "failed");
    let e = sd.active_state("gone.service").await.unwrap_err();
    assert!(
        matches!(&e, HealthError::Unit { unit, why } if unit == "gone.service" && why.contains("not loaded")),
        "{e}"
    );

    let d = tempfile::tempdir().unwrap();
    let mut plan = HealthPlan::from_config(&HealthConfig::default(), &Paths::new(d.path()));
    plan.units = [
        "nginx.service",
        "db.service",
        "cron.service",
        "gone.service",
    ]
    .map(String::from)
    .to_vec();
    let r = plan.run(Duration::from_secs(30), &sd).await;
    let v: Vec<Verdict> = r.checks.iter().map(|c| c.verdict).collect();
    assert_eq!(
        v,
        [Verdict::Pass, Verdict::Fail, Verdict::Fail, Verdict::Fail],
        "{r}"
    );
    assert!(r.checks[2].output.contains("activating"), "{r}");
    assert!(!r.passed());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_systemd_on_the_bus_is_a_failed_check_not_a_hang() {
    let Some(bus) = SessionBus::start() else {
        return;
    };
    let sd = SystemdUnits::new(bus.client().await);
    let d = tempfile::tempdir().unwrap();
    let mut plan = HealthPlan::from_config(&HealthConfig::default(), &Paths::new(d.path()));
    plan.units = vec!["nginx.service".into()];
    plan.check_timeout = Duration::from_secs(5);
    let r = plan.run(Duration::from_secs(30), &sd).await;
    assert_eq!(r.checks[0].verdict, Verdict::Fail, "{r}");
}
