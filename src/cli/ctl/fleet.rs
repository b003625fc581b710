//! `patchctl fleet`: this device's fleet reboot slot — show it, give it back.

use clap::Subcommand;

use super::{done, print_json, status_text, CtlError};
use crate::dbus::proxy::ManagerProxy;
use crate::dbus::StatusView;

#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Show this device's reboot slot: its group, whether it holds one (or keeps one
    /// after a failed update), who holds the group's slots and when it asks again.
    Status,
    /// Give this device's reboot slot back now.
    ///
    /// A device keeps its slot through the reboot, the health checks and probation,
    /// and gives it back by itself once steady. After a failed update (rolled back,
    /// failed) it keeps the slot on purpose, so its group pauses until someone looks;
    /// `release` is how an operator lets the group go on. Also frees a slot the lock
    /// service still counts for this device after lost state. Audited as
    /// `reboot_slot_released`. Exit 6 when no reboot lock is configured, 1 when the
    /// lock service does not answer (nothing changes then).
    Release {
        /// Why (recorded in the audit trail).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub async fn run(
    p: &ManagerProxy<'_>,
    cmd: &FleetCmd,
    s: &StatusView,
    json: bool,
) -> Result<(), CtlError> {
    match cmd {
        FleetCmd::Status => {
            if json {
                print_json(&serde_json::to_value(&s.fleet).unwrap_or_default());
            } else {
                match status_text::fleet_line(s) {
                    Some(l) => println!("Reboot slot: {l}"),
                    None => println!(
                        "Reboot slot: reboots are not coordinated ([fleet] lock = \"none\")"
                    ),
                }
            }
        }
        FleetCmd::Release { reason } => {
            p.fleet_release(reason).await?;
            done(json, "Reboot slot given back.");
        }
    }
    Ok(())
}
