//! Unit states from systemd over D-Bus (Manager.GetUnit + Unit.ActiveState).

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use zbus::zvariant::OwnedObjectPath;

use super::HealthError;

/// Where unit states come from: systemd on devices, a fixed map in the simulation.
pub trait UnitQuery: Send + Sync {
    /// `ActiveState` of `unit` (`active`, `failed`, `inactive`, …). A unit systemd does
    /// not have loaded is an error naming the unit.
    fn active_state<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<String, HealthError>>;
}

/// systemd's manager on a D-Bus connection (the system bus on devices; any bus in tests).
#[derive(Debug, Clone)]
pub struct SystemdUnits {
    conn: zbus::Connection,
}

const DEST: &str = "org.freedesktop.systemd1";

impl SystemdUnits {
    pub fn new(conn: zbus::Connection) -> Self {
        Self { conn }
    }

    pub async fn system() -> Result<Self, HealthError> {
        Ok(Self::new(zbus::Connection::system().await?))
    }

    async fn query(&self, unit: &str) -> Result<String, HealthError> {
        let manager = zbus::Proxy::new(
            &self.conn,
            DEST,
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
        )
        .await?;
        let path: OwnedObjectPath = match manager.call("GetUnit", &(unit,)).await {
            Ok(p) => p,
            Err(zbus::Error::MethodError(name, msg, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                return Err(HealthError::Unit {
                    unit: unit.to_string(),
                    why: format!("not loaded ({})", msg.unwrap_or_default()),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let unit_proxy = zbus::proxy::Builder::<zbus::Proxy<'_>>::new(&self.conn)
            .destination(DEST)?
            .path(path)?
            .interface("org.freedesktop.systemd1.Unit")?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let state: String = unit_proxy.get_property("ActiveState").await?;
        Ok(state)
    }
}

impl UnitQuery for SystemdUnits {
    fn active_state<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<String, HealthError>> {
        Box::pin(self.query(unit))
    }
}

/// Fixed unit states for the simulated device; unknown units are "not loaded".
#[derive(Debug, Clone, Default)]
pub struct FixedUnits(pub BTreeMap<String, String>);

impl UnitQuery for FixedUnits {
    fn active_state<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<String, HealthError>> {
        let r = self.0.get(unit).cloned().ok_or_else(|| HealthError::Unit {
            unit: unit.to_string(),
            why: "not loaded".to_string(),
        });
        Box::pin(async move { r })
    }
}
