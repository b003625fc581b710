//! The methods of `org.patchd.Patchd1.Manager`, declared once: member name, arguments
//! (name, the client's Rust type, the limit that applies), result type, and who may call
//! it (polkit action, and whether it takes the one mutating-call slot).
//!
//! Why a `macro_rules!` table and not a derive: the `#[zbus::interface]` impl holds the
//! method bodies and zbus offers no hook to feed it a table, so the service stays written
//! by hand and is checked against the table instead — by the introspection test (the live
//! service's XML against [`METHODS`]) and by [`super::checked`], which refuses any call
//! whose signature or arguments do not fit its row before the body runs. Everything else
//! is generated from the one table: [`METHODS`] (signatures for `checked`, limits, the
//! polkit action of each call, the action list the polkit policy is tested against) and
//! the client proxy ([`super::proxy::ManagerProxy`]), so the proxy cannot disagree with
//! the table either. Signatures are computed from the Rust types (`zvariant::Type`), not
//! written as strings that could drift.
//!
//! Adding a method: one row here, the `#[interface]` method in `service.rs` (which asks
//! [`super::service`]'s `admit` for the caller: the action comes from the row), a
//! [`super::ManagerBackend`] method with a default answer (so backends that do not offer
//! it need no edit), the engine command, and the CLI verb.

use zbus::zvariant::{Signature, Type};

use super::authz::Action;
use super::limits::{INSTALL_OPTIONS, SWITCH_OPTIONS};

/// What an argument must satisfy before the method body sees it (the bounds themselves
/// come from [`super::limits::ArgLimits`], set per service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgRule {
    /// A release or version: printable ASCII, no spaces, at most `ArgLimits::release`
    /// bytes; empty means none.
    Version,
    /// Free text for the audit trail: no control characters, at most `ArgLimits::reason`.
    Text { required: bool },
    /// RFC 3339, or empty for none.
    Timestamp,
    /// An `a{sv}` of these keys only, at most `ArgLimits::option_entries` of them.
    Options(&'static [&'static str]),
    /// `GetHistory`'s filter (keys, types and values checked).
    HistoryFilter,
    /// A file descriptor (`h`) the caller opened with its own rights; the daemon reads
    /// from it and never opens a caller's path.
    Fd,
}

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone on the bus (reads; the bus policy may still restrict).
    Read,
    /// Authorized by polkit `action`; `exclusive` calls also take the one mutating-call
    /// slot (a second one gets `Busy`), the others (`Check`, `Cancel`) run beside it.
    Admin { action: Action, exclusive: bool },
}

impl Access {
    pub fn action(self) -> Option<Action> {
        match self {
            Access::Read => None,
            Access::Admin { action, .. } => Some(action),
        }
    }
}

/// One in-argument of a method.
#[derive(Debug)]
pub struct Arg {
    pub name: &'static str,
    pub signature: &'static Signature,
    pub rule: ArgRule,
}

/// One method of the manager interface.
#[derive(Debug)]
pub struct Method {
    /// The D-Bus member name.
    pub member: &'static str,
    pub args: &'static [Arg],
    pub out: &'static Signature,
    pub access: Access,
}

impl Method {
    /// The body signature a call must have, e.g. `sa{sv}` ("" for none).
    pub fn in_signature(&self) -> String {
        self.args.iter().map(|a| a.signature.to_string()).collect()
    }

    /// The result signature ("" for none).
    pub fn out_signature(&self) -> String {
        self.out.to_string()
    }
}

/// The table. `$then` is a macro that receives the rows; [`METHODS`] and the proxy are
/// built this way. Each row: doc comment, member, client function with its arguments
/// (`name: ClientType => rule`), result type, access.
macro_rules! manager_methods {
    ($then:ident) => {
        $then! {
            /// Look for new releases now. Returns the outcome as JSON.
            "Check" fn check() -> String,
                Access::Admin { action: Action::Check, exclusive: false };
            /// Stage `release` ("" = newest allowed); option `switch_now` (b) switches
            /// right after. Returns JSON `{job, version, slot, switch_after}`.
            "Install" fn install(
                release: &str => ArgRule::Version,
                options: HashMap<&str, Value<'_>> => ArgRule::Options(INSTALL_OPTIONS)
            ) -> String,
                Access::Admin { action: Action::Install, exclusive: true };
            /// Switch to the staged release now; option `force` (b, default true)
            /// overrides window, rollout stage and inhibitors.
            "Switch" fn switch(
                options: HashMap<&str, Value<'_>> => ArgRule::Options(SWITCH_OPTIONS)
            ) -> (),
                Access::Admin { action: Action::Switch, exclusive: true };
            /// Stop the running job; whoever may install may cancel, beside the call it
            /// cancels (which holds the mutating-call slot).
            "Cancel" fn cancel() -> (),
                Access::Admin { action: Action::Install, exclusive: false };
            /// Go back to the previous release now.
            "Rollback" fn rollback(
                reason: &str => ArgRule::Text { required: false }
            ) -> (),
                Access::Admin { action: Action::Rollback, exclusive: true };
            /// Declare the booted release good (commit it).
            "MarkGood" fn mark_good() -> (),
                Access::Admin { action: Action::Mark, exclusive: true };
            /// Declare the booted release bad: rolled back, never retried automatically.
            "MarkBad" fn mark_bad(
                reason: &str => ArgRule::Text { required: true }
            ) -> (),
                Access::Admin { action: Action::Mark, exclusive: true };
            /// Place a hold until `until` ("" = until released), up to `max_version`.
            "Hold" fn hold(
                reason: &str => ArgRule::Text { required: true },
                until: &str => ArgRule::Timestamp,
                max_version: &str => ArgRule::Version
            ) -> (),
                Access::Admin { action: Action::Hold, exclusive: true };
            /// Release the hold.
            "ReleaseHold" fn release_hold() -> (),
                Access::Admin { action: Action::Hold, exclusive: true };
            /// Leave degraded mode; returns the repair report as JSON.
            "Repair" fn repair() -> String,
                Access::Admin { action: Action::Repair, exclusive: true };
            /// Full status as JSON.
            "GetStatus" fn get_status() -> String, Access::Read;
            /// Audit records as a JSON array; filter keys `limit`, `since`, `event`,
            /// `release`.
            "GetHistory" fn get_history(
                filter: HashMap<&str, Value<'_>> => ArgRule::HistoryFilter
            ) -> String,
                Access::Read;
            /// Inventory document as JSON.
            "GetInventory" fn get_inventory() -> String, Access::Read;
            /// Verify the audit hash chain; JSON with at least `{"ok": bool}`.
            "VerifyAudit" fn verify_audit() -> String, Access::Read;
            /// Approve `release`, which an urgency rule sends to approval.
            "Approve" fn approve(
                release: &str => ArgRule::Version
            ) -> (),
                Access::Admin { action: Action::Approve, exclusive: true };
            /// Allow `release`, which failed on this device, to be tried again; `reason`
            /// (the fix) goes to the audit trail.
            "Retry" fn retry(
                release: &str => ArgRule::Version,
                reason: &str => ArgRule::Text { required: true }
            ) -> (),
                Access::Admin { action: Action::Retry, exclusive: true };
            /// Place a hold as `Hold` does (it replaces the hold in place); returns JSON
            /// `{"replaced": [hold]}`, what it replaced.
            "PlaceHold" fn place_hold(
                reason: &str => ArgRule::Text { required: true },
                until: &str => ArgRule::Timestamp,
                max_version: &str => ArgRule::Version
            ) -> String,
                Access::Admin { action: Action::Hold, exclusive: true };
            /// Install from an offline bundle: `bundle` is a descriptor of its tar stream
            /// (a file, or a pipe the caller writes a directory into) opened with the
            /// caller's rights; `release` and option `switch_now` as for `Install`.
            /// Returns JSON `{job, version, slot, switch_after}`.
            "InstallBundle" fn install_bundle(
                bundle: zbus::zvariant::OwnedFd => ArgRule::Fd,
                release: &str => ArgRule::Version,
                options: HashMap<&str, Value<'_>> => ArgRule::Options(INSTALL_OPTIONS)
            ) -> String,
                Access::Admin { action: Action::Install, exclusive: true };
            /// What the offline bundle read from `bundle` offers this device (verified as
            /// for `InstallBundle`; nothing installed): JSON `{available, not_carried,
            /// expired}`.
            "ListBundle" fn list_bundle(
                bundle: zbus::zvariant::OwnedFd => ArgRule::Fd
            ) -> String,
                Access::Admin { action: Action::Check, exclusive: true };
            /// What the caller may do: JSON `{ACTION: {result, text}}` per polkit action,
            /// `result` `yes`, `auth` (after authentication) or `no`, as polkit answers
            /// now without a prompt.
            "GetAuthorizations" fn get_authorizations() -> String, Access::Read;
            /// Give this device's fleet reboot slot back now, also one kept after a
            /// failed update (which pauses the device's group); `reason` is audited.
            "FleetRelease" fn fleet_release(
                reason: &str => ArgRule::Text { required: false }
            ) -> (),
                Access::Admin { action: Action::Fleet, exclusive: false };
        }
    };
}
pub(crate) use manager_methods;

macro_rules! method_table {
    ($(
        $(#[$meta:meta])*
        $member:literal fn $fname:ident ( $( $arg:ident : $aty:ty => $rule:expr ),* $(,)? )
            -> $out:ty, $access:expr;
    )*) => {
        /// Every method of `org.patchd.Patchd1.Manager`, in introspection order.
        pub static METHODS: &[Method] = &[$(
            Method {
                member: $member,
                args: &[$(Arg {
                    name: stringify!($arg),
                    signature: <$aty as Type>::SIGNATURE,
                    rule: $rule,
                }),*],
                out: <$out as Type>::SIGNATURE,
                access: $access,
            },
        )*];
    };
}

// The client types only give the signatures here.
use std::collections::HashMap;
use zbus::zvariant::Value;

manager_methods!(method_table);

/// The row of `member`, if it is one of ours.
pub fn method(member: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.member == member)
}

/// The polkit actions the methods use, each once, in table order: what
/// `systemd/org.patchd.patchd1.policy` must declare (tests/systemd_units.rs).
pub fn actions() -> Vec<Action> {
    let mut out = Vec::new();
    for a in METHODS.iter().filter_map(|m| m.access.action()) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// One method as introspection shows it: member, `(name, type)` of each in-argument,
/// result signature. Compared with the XML by the tests (here and in
/// tests/dbus_introspection.rs).
pub type MethodRow = (String, Vec<(String, String)>, String);

/// [`METHODS`] as [`MethodRow`]s.
pub fn table_rows() -> Vec<MethodRow> {
    METHODS
        .iter()
        .map(|m| {
            let args = m
                .args
                .iter()
                .map(|a| (a.name.to_owned(), a.signature.to_string()))
                .collect();
            (m.member.to_owned(), args, m.out_signature())
        })
        .collect()
}

/// The `<method>` elements of an introspection document (as zbus writes it: one
/// `<arg …/>` per line) as [`MethodRow`]s, in document order.
pub fn parse_methods(xml: &str) -> Vec<MethodRow> {
    fn attr(line: &str, name: &str) -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_owned())
    }
    let mut out = Vec::new();
    for chunk in xml.split("<method name=\"").skip(1) {
        let member = chunk.split('"').next().unwrap_or_default().to_owned();
        let body = chunk.split("</method>").next().unwrap_or_default();
        let mut args = Vec::new();
        let mut ret = String::new();
        for l in body.lines().filter(|l| l.contains("<arg ")) {
            let ty = attr(l, "type").unwrap_or_default();
            if l.contains("direction=\"out\"") {
                ret.push_str(&ty);
            } else {
                args.push((attr(l, "name").unwrap_or_default(), ty));
            }
        }
        out.push((member, args, ret));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_come_from_the_types() {
        let sig = |m: &str| method(m).map(|m| (m.in_signature(), m.out_signature()));
        assert_eq!(sig("Install"), Some(("sa{sv}".into(), "s".into())));
        assert_eq!(sig("Hold"), Some(("sss".into(), "".into())));
        assert_eq!(sig("Check"), Some(("".into(), "s".into())));
        assert_eq!(sig("InstallBundle"), Some(("hsa{sv}".into(), "s".into())));
        assert_eq!(sig("Reboot"), None);
    }

    #[test]
    fn members_are_unique_and_every_action_is_used() {
        let mut names: Vec<_> = METHODS.iter().map(|m| m.member).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METHODS.len());
        // An action no method asks for would be a polkit policy entry guarding nothing.
        for a in [
            Action::Check,
            Action::Install,
            Action::Switch,
            Action::Rollback,
            Action::Hold,
            Action::Mark,
            Action::Repair,
            Action::Approve,
            Action::Retry,
            Action::Fleet,
        ] {
            // `match` keeps this list complete when an action is added.
            match a {
                Action::Check
                | Action::Install
                | Action::Switch
                | Action::Rollback
                | Action::Hold
                | Action::Mark
                | Action::Repair
                | Action::Approve
                | Action::Retry
                | Action::Fleet => assert!(actions().contains(&a), "{a:?} unused"),
            }
        }
    }

    /// The table says what the checked-in introspection XML says (which
    /// tests/dbus_introspection.rs keeps equal to the live service): members, argument
    /// names and types in order, results.
    #[test]
    fn table_matches_introspection_xml() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(crate::dbus::INTROSPECTION_XML_PATH);
        let xml = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            parse_methods(&xml),
            table_rows(),
            "{} differs from dbus::methods::METHODS",
            path.display()
        );
    }
}
