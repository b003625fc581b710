//! The U-Boot environment as U-Boot and `fw_printenv`/`fw_setenv` (libubootenv) store it.
//!
//! One copy is `crc32 (LE) | data`; a redundant copy is `crc32 | flag | data`. The data are
//! `name=value\0` records ended by an empty record, padded to the copy's size; the CRC
//! covers the whole data area. With two copies the valid one with the newer flag wins
//! (incrementing flags, 255 → 0 wraps), and a write goes to the other copy with the flag
//! advanced, so a power cut leaves the old copy valid.
//!
//! Variables follow the common A/B convention: `BOOT_ORDER="A B"`, `BOOT_A_LEFT`,
//! `BOOT_B_LEFT`; patchd adds `BOOT_<S>_OK=1` for a committed slot, which the shipped
//! `packaging/u-boot/boot.cmd` boots without using up attempts.

use super::ab::{parse_counter, parse_order, AbSlot, AbState, AbStore};
use super::detect::Detector;
use super::grubenv::check_slot_names;
#[cfg(test)]
pub(super) use super::uboot_env::decode_copy;
pub use super::uboot_env::{
    describe_copies, encode_copy, parse_fw_env_config, LoadedEnv, UbootEnv, UbootVars,
};
use super::BootError;
use crate::names::SlotName;

pub const ORDER_VAR: &str = "BOOT_ORDER";
/// Attempts written for a good slot, so a RAUC-style script that knows no `_OK` flag
/// still boots it (and userspace marks it good again, as RAUC does).
pub const GOOD_LEFT: u32 = 3;

fn upper(slot: &SlotName) -> String {
    slot.as_str().to_ascii_uppercase()
}
pub fn left_var(slot: &SlotName) -> String {
    format!("BOOT_{}_LEFT", upper(slot))
}
pub fn ok_var(slot: &SlotName) -> String {
    format!("BOOT_{}_OK", upper(slot))
}

pub fn state_from_vars(
    what: &str,
    vars: &UbootVars,
    all: &[SlotName],
) -> Result<AbState, BootError> {
    let Some(order) = vars.get(ORDER_VAR) else {
        return Err(BootError::Format {
            path: what.to_string(),
            why: format!(
                "no {ORDER_VAR} variable: not set up for A/B boot (an admin can run `patchd boot reset --primary SLOT`)"
            ),
        });
    };
    let order = parse_order(what, ORDER_VAR, order, all, |w| w.to_ascii_lowercase())?;
    let mut st = AbState {
        order,
        slots: Default::default(),
    };
    for s in all {
        let left = match vars.get(&left_var(s)) {
            Some(v) => parse_counter(what, &left_var(s), v)?,
            None => 0,
        };
        let good = match vars.get(&ok_var(s)).map(String::as_str) {
            None | Some("0") => false,
            Some("1") => true,
            Some(v) => {
                return Err(BootError::Format {
                    path: what.to_string(),
                    why: format!("{}={v:?} is not 0 or 1", ok_var(s)),
                })
            }
        };
        st.slots.insert(s.clone(), AbSlot { left, good });
    }
    Ok(st)
}

pub fn state_into_vars(st: &AbState, vars: &mut UbootVars) {
    let order: Vec<String> = st.order.iter().map(upper).collect();
    vars.insert(ORDER_VAR.to_string(), order.join(" "));
    for (s, i) in &st.slots {
        let left = if i.good { GOOD_LEFT } else { i.left };
        vars.insert(left_var(s), left.to_string());
        vars.insert(ok_var(s), if i.good { "1" } else { "0" }.to_string());
    }
}

#[derive(Debug, Clone)]
pub struct UbootBootloader {
    env: UbootEnv,
    slots: Vec<SlotName>,
    detector: Option<Detector>,
}

impl UbootBootloader {
    pub fn new(env: UbootEnv, slots: Vec<SlotName>) -> Result<Self, BootError> {
        check_slot_names("U-Boot", &slots)?;
        Ok(Self {
            env,
            slots,
            detector: None,
        })
    }

    pub fn with_detector(mut self, detector: Detector) -> Self {
        self.detector = Some(detector);
        self
    }

    pub fn env(&self) -> &UbootEnv {
        &self.env
    }

    pub fn slot_names(&self) -> &[SlotName] {
        &self.slots
    }

    pub fn load(&self) -> Result<(LoadedEnv, AbState), BootError> {
        let cur = self.env.load()?;
        let st = state_from_vars(&self.env.name(), &cur.vars, &self.slots)?;
        Ok((cur, st))
    }
}

impl AbStore for UbootBootloader {
    const KIND: &'static str = "uboot";

    fn location(&self) -> String {
        self.env.name()
    }

    fn booted(&self) -> Result<SlotName, BootError> {
        match &self.detector {
            Some(d) => d.detect(None),
            None => Err(BootError::Detection(
                "U-Boot keeps no record of the booted slot; configure detection".to_string(),
            )),
        }
    }

    fn load_state(&self) -> Result<AbState, BootError> {
        Ok(self.load()?.1)
    }

    fn modify_state(
        &self,
        f: impl FnOnce(&mut AbState) -> Result<(), BootError>,
    ) -> Result<(), BootError> {
        let (cur, mut st) = self.load()?;
        f(&mut st)?;
        let mut vars = cur.vars.clone();
        state_into_vars(&st, &mut vars);
        self.env.store(Some(&cur), &vars)?;
        tracing::info!(env = %self.env.name(), order = ?st.order, "U-Boot environment updated");
        Ok(())
    }

    /// Keeps every other variable of the current environment. Over a blank (never
    /// written) environment it starts empty; over corrupt copies it refuses, because the
    /// board's own variables (`bootcmd`, `ethaddr`, `serial#`) would be lost without a
    /// word: [`super::uboot_reset`] is the explicit way (defaults file or force, backup).
    fn reset_state(&self, primary: &SlotName) -> Result<(), BootError> {
        let mut vars = match super::uboot_inspect::base_for_plain_reset(&self.env)? {
            Some(v) => v,
            None => {
                tracing::info!(env = %self.env.name(), "initialising a blank U-Boot environment");
                UbootVars::new()
            }
        };
        let st = AbState::fresh(&self.slots, primary)?;
        state_into_vars(&st, &mut vars);
        self.env.reset(&vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::uboot_env::newer;

    #[test]
    fn copy_round_trip_and_crc() {
        let mut vars = UbootVars::new();
        vars.insert("BOOT_ORDER".into(), "A B".into());
        vars.insert("bootcmd".into(), "run x".into());
        let b = encode_copy("t", &vars, 64, Some(7)).unwrap();
        assert_eq!(decode_copy(&b, true).unwrap(), (Some(7), vars.clone()));
        let mut bad = b.clone();
        bad[10] ^= 1;
        assert!(decode_copy(&bad, true).unwrap_err().contains("CRC"));
        assert!(encode_copy("t", &vars, 20, None).is_err());
        assert_eq!(newer(255, 0), 1);
        assert_eq!(newer(0, 255), 0);
        assert_eq!(newer(3, 4), 1);
        assert_eq!(newer(4, 4), 0);
    }

    #[test]
    fn fw_env_config_lines() {
        let c = parse_fw_env_config(
            "cfg",
            "# comment\n/dev/mmcblk0 0x3fe000 0x2000\n/dev/mmcblk0 0x400000 8192 0x200\n",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].offset, 0x3fe000);
        assert_eq!(c[1].size, 8192);
        assert!(parse_fw_env_config("cfg", "/dev/x zz 1\n").is_err());
        assert!(parse_fw_env_config("cfg", "").is_err());
    }
}
