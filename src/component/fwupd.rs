//! A small client of the system's fwupd (`org.freedesktop.fwupd`, object `/`, on the
//! system bus): the calls the `firmware` method makes, with fwupd's answers kept as
//! fwupd words them (its error text reaches status and the audit log verbatim).

use std::collections::HashMap;
use std::os::fd::AsFd;

use futures_util::StreamExt;
use zvariant::{OwnedValue, Value};

pub const SERVICE: &str = "org.freedesktop.fwupd";

/// Which bus fwupd is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FwupdBus {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS` or the standard socket).
    System,
    /// A private bus (tests): a D-Bus address such as `unix:path=/tmp/x/bus`.
    Address(String),
}

impl std::fmt::Display for FwupdBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FwupdBus::System => f.write_str("the system bus"),
            FwupdBus::Address(a) => write!(f, "bus {a}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FwupdError {
    #[error("cannot reach fwupd on {bus}: {source}")]
    Connect {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    /// fwupd answered with an error; `message` is its text, unchanged.
    #[error("fwupd {method}: {message}")]
    Call {
        method: &'static str,
        message: String,
    },
}

/// One device as fwupd describes it (the keys of its `a{sv}` we use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// `DeviceId`; empty in `GetDetails` for a cabinet no present device matches.
    pub id: String,
    pub name: String,
    pub version: String,
    pub guids: Vec<String>,
    /// `UpdateState` (2 success, 3 failed, 4 needs reboot, 5 failed transiently).
    pub update_state: u32,
    /// `UpdateError`: why an update failed, or why a cabinet fits no device.
    pub update_error: String,
    /// Versions of the releases attached (`GetDetails`: the cabinet's).
    pub release_versions: Vec<String>,
}

pub const STATE_SUCCESS: u32 = 2;
pub const STATE_FAILED: u32 = 3;
pub const STATE_NEEDS_REBOOT: u32 = 4;
pub const STATE_FAILED_TRANSIENT: u32 = 5;

type Dict = HashMap<String, OwnedValue>;

fn text(d: &Dict, key: &str) -> String {
    d.get(key)
        .and_then(|v| <&str>::try_from(&**v).ok())
        .unwrap_or_default()
        .to_string()
}

fn device(d: &Dict) -> Device {
    let guids = d
        .get("Guid")
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| Vec::<String>::try_from(v).ok())
        .unwrap_or_default();
    let releases = d
        .get("Release")
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| Vec::<Dict>::try_from(v).ok())
        .unwrap_or_default();
    Device {
        id: text(d, "DeviceId"),
        name: text(d, "Name"),
        version: text(d, "Version"),
        guids,
        update_state: d
            .get("UpdateState")
            .and_then(|v| u32::try_from(&**v).ok())
            .unwrap_or(0),
        update_error: text(d, "UpdateError"),
        release_versions: releases
            .iter()
            .map(|r| text(r, "Version"))
            .filter(|v| !v.is_empty())
            .collect(),
    }
}

/// fwupd's words for its `Status` property.
pub fn status_name(s: u32) -> &'static str {
    match s {
        1 => "idle",
        2 => "loading",
        3 => "decompressing",
        4 => "restarting the device",
        5 => "writing",
        6 => "verifying",
        7 => "scheduling",
        8 => "downloading",
        9 => "reading",
        10 => "erasing",
        11 => "waiting for authentication",
        12 => "device busy",
        13 => "shutting down",
        14 => "waiting for the user",
        _ => "unknown",
    }
}

/// A connection to fwupd.
pub struct Fwupd {
    conn: zbus::Connection,
    proxy: zbus::Proxy<'static>,
}

fn call_err(method: &'static str) -> impl FnOnce(zbus::Error) -> FwupdError {
    move |e| FwupdError::Call {
        method,
        message: match e {
            zbus::Error::MethodError(name, Some(msg), _) => format!("{msg} ({name})"),
            zbus::Error::MethodError(name, None, _) => name.to_string(),
            other => other.to_string(),
        },
    }
}

impl Fwupd {
    pub async fn connect(bus: &FwupdBus) -> Result<Fwupd, FwupdError> {
        let connect_err = |source| FwupdError::Connect {
            bus: bus.to_string(),
            source,
        };
        let builder = match bus {
            FwupdBus::System => zbus::connection::Builder::system(),
            FwupdBus::Address(a) => zbus::connection::Builder::address(a.as_str()),
        }
        .map_err(connect_err)?;
        let conn = builder.build().await.map_err(connect_err)?;
        let proxy = zbus::proxy::Builder::new(&conn)
            .destination(SERVICE)
            .and_then(|b| b.path("/"))
            .and_then(|b| b.interface(SERVICE))
            .map_err(connect_err)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(connect_err)?;
        Ok(Fwupd { conn, proxy })
    }

    /// `GetDevices`: every device fwupd knows.
    pub async fn devices(&self) -> Result<Vec<Device>, FwupdError> {
        let list: Vec<Dict> = self
            .proxy
            .call("GetDevices", &())
            .await
            .map_err(call_err("GetDevices"))?;
        Ok(list.iter().map(device).collect())
    }

    /// `GetDetails(h)`: what fwupd makes of the cabinet in `file`, one entry per
    /// component of it, with the present device it matches (or none: `id` empty).
    pub async fn details(&self, file: &std::fs::File) -> Result<Vec<Device>, FwupdError> {
        let fd = zvariant::Fd::from(file.as_fd());
        let list: Vec<Dict> = self
            .proxy
            .call("GetDetails", &(fd,))
            .await
            .map_err(call_err("GetDetails"))?;
        Ok(list.iter().map(device).collect())
    }

    /// `Install(s, h, a{sv})` of the cabinet in `file` on device `id`, with no options
    /// (fwupd's own checks stay in charge: no forced downgrade or reinstall). While it
    /// runs, fwupd's `Status`/`Percentage` changes go to `progress`.
    pub async fn install(
        &self,
        id: &str,
        file: &std::fs::File,
        progress: &mut (dyn FnMut(Option<u32>, Option<u32>) + Send),
    ) -> Result<(), FwupdError> {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(SERVICE)
            .and_then(|b| b.interface("org.freedesktop.DBus.Properties"))
            .and_then(|b| b.member("PropertiesChanged"))
            .and_then(|b| b.path("/"))
            .map(|b| b.build());
        // Progress is only shown; a bus that will not give it does not stop the install.
        let mut changes = match rule {
            Ok(rule) => zbus::MessageStream::for_match_rule(rule, &self.conn, None)
                .await
                .ok(),
            Err(_) => None,
        };
        let options: HashMap<&str, Value<'_>> = HashMap::new();
        let fd = zvariant::Fd::from(file.as_fd());
        let args = (id, fd, options);
        let call = self.proxy.call::<_, _, ()>("Install", &args);
        tokio::pin!(call);
        loop {
            let next = async {
                match changes.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut call => return r.map_err(call_err("Install")),
                Some(Ok(msg)) = next => {
                    if let Ok((_, changed, _)) =
                        msg.body().deserialize::<(String, Dict, Vec<String>)>()
                    {
                        let get = |k: &str| changed.get(k).and_then(|v| u32::try_from(&**v).ok());
                        progress(get("Status"), get("Percentage"));
                    }
                }
            }
        }
    }

    /// `GetResults(s)`: the outcome of the last update of device `id`.
    pub async fn results(&self, id: &str) -> Result<Device, FwupdError> {
        let d: Dict = self
            .proxy
            .call("GetResults", &(id,))
            .await
            .map_err(call_err("GetResults"))?;
        Ok(device(&d))
    }
}
