//! The A/B state kept as environment variables. GRUB's environment block and U-Boot's
//! environment both hold it as `name=value` pairs — a boot order plus a counter and a good
//! flag per slot — and differ only in how the names and order words are spelt, so reading
//! and writing it is written once here and each backend gives its [`VarScheme`].

use super::ab::{parse_counter, parse_order, AbSlot, AbState};
use super::BootError;
use crate::names::SlotName;

/// How one bootloader spells the A/B state.
pub struct VarScheme {
    /// The bootloader, for errors ("GRUB", "U-Boot").
    pub kind: &'static str,
    /// The variable holding the boot order.
    pub order_var: &'static str,
    /// What a missing order means ("patchd", "A/B boot"), for the error.
    pub set_up_for: &'static str,
    pub left_var: fn(&SlotName) -> String,
    pub ok_var: fn(&SlotName) -> String,
    /// A slot as written in the order, and an order word back to a slot name.
    pub order_word: fn(&SlotName) -> String,
    pub slot_of_word: fn(&str) -> String,
    /// The counter written for a good slot: `None` keeps its own; U-Boot writes a fixed
    /// number so scripts that know no good flag still boot it.
    pub good_left: Option<u32>,
}

impl VarScheme {
    /// Read the state; `get` looks a variable up, `what` names the store in errors.
    pub fn read<'a>(
        &self,
        what: &str,
        get: impl Fn(&str) -> Option<&'a str>,
        all: &[SlotName],
    ) -> Result<AbState, BootError> {
        let order_var = self.order_var;
        let Some(order) = get(order_var) else {
            return Err(BootError::Format {
                path: what.to_string(),
                why: format!(
                    "no {order_var} variable: not set up for {} (an admin can run `patchd boot reset --primary SLOT`)",
                    self.set_up_for
                ),
            });
        };
        let order = parse_order(what, order_var, order, all, self.slot_of_word)?;
        let mut st = AbState {
            order,
            slots: Default::default(),
        };
        for s in all {
            let (left_var, ok_var) = ((self.left_var)(s), (self.ok_var)(s));
            let left = match get(&left_var) {
                Some(v) => parse_counter(what, &left_var, v)?,
                None => 0,
            };
            let good = match get(&ok_var) {
                None | Some("0") => false,
                Some("1") => true,
                Some(v) => {
                    return Err(BootError::Format {
                        path: what.to_string(),
                        why: format!("{ok_var}={v:?} is not 0 or 1"),
                    })
                }
            };
            st.slots.insert(s.clone(), AbSlot { left, good });
        }
        Ok(st)
    }

    /// Write the state with `set`, touching no other variable.
    pub fn write(&self, st: &AbState, mut set: impl FnMut(String, String)) {
        let order: Vec<String> = st.order.iter().map(self.order_word).collect();
        set(self.order_var.to_string(), order.join(" "));
        for (s, i) in &st.slots {
            let left = match self.good_left {
                Some(n) if i.good => n,
                _ => i.left,
            };
            set((self.left_var)(s), left.to_string());
            set((self.ok_var)(s), if i.good { "1" } else { "0" }.to_string());
        }
    }

    /// Slot names must be usable inside the bootloader's variable names.
    pub fn check_slot_names(&self, slots: &[SlotName]) -> Result<(), BootError> {
        match slots.iter().find(|s| s.as_str().contains('-')) {
            Some(s) => Err(BootError::Refused(format!(
                "slot name {s} cannot be part of a {} variable name (use a-z, 0-9, _)",
                self.kind
            ))),
            None => Ok(()),
        }
    }
}
