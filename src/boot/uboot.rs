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

use super::ab::{booted_by_detection, AbState, AbStore};
use super::ab_vars::VarScheme;
use super::detect::Detector;
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

/// How the U-Boot environment spells the A/B state (the common A/B convention).
pub const UBOOT_VARS: VarScheme = VarScheme {
    kind: "U-Boot",
    order_var: ORDER_VAR,
    set_up_for: "A/B boot",
    left_var,
    ok_var,
    order_word: upper,
    slot_of_word: |w| w.to_ascii_lowercase(),
    good_left: Some(GOOD_LEFT),
};

pub fn state_from_vars(
    what: &str,
    vars: &UbootVars,
    all: &[SlotName],
) -> Result<AbState, BootError> {
    UBOOT_VARS.read(what, |k| vars.get(k).map(String::as_str), all)
}

pub fn state_into_vars(st: &AbState, vars: &mut UbootVars) {
    UBOOT_VARS.write(st, |k, v| {
        vars.insert(k, v);
    });
}

#[derive(Debug, Clone)]
pub struct UbootBootloader {
    env: UbootEnv,
    slots: Vec<SlotName>,
    detector: Option<Detector>,
}

impl UbootBootloader {
    pub fn new(env: UbootEnv, slots: Vec<SlotName>) -> Result<Self, BootError> {
        UBOOT_VARS.check_slot_names(&slots)?;
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
}

impl AbStore for UbootBootloader {
    const KIND: &'static str = "uboot";
    type Rest = LoadedEnv;

    fn location(&self) -> String {
        self.env.name()
    }

    fn booted(&self) -> Result<SlotName, BootError> {
        booted_by_detection(self.detector.as_ref(), "U-Boot")
    }

    fn read_store(&self) -> Result<(AbState, LoadedEnv), BootError> {
        let cur = self.env.load()?;
        let st = state_from_vars(&self.env.name(), &cur.vars, &self.slots)?;
        Ok((st, cur))
    }

    fn write_store(&self, st: &AbState, cur: LoadedEnv) -> Result<(), BootError> {
        let mut vars = cur.vars.clone();
        state_into_vars(st, &mut vars);
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
