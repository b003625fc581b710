//! A call whose body does not have the method's D-Bus signature is refused with our own
//! `org.patchd.Patchd1.Error.InvalidArgument`, like every other malformed argument.
//!
//! zbus's generated dispatcher would answer such a call itself, with its own
//! `org.freedesktop.zbus.Error`, before any of our code runs. [`Checked`] wraps the
//! generated interface, compares the body signature with [`METHOD_SIGNATURES`] first and
//! hands everything else (properties, introspection, the calls themselves) to the wrapped
//! interface unchanged. `zbus::object_server::Interface` is marked unstable by zbus; the
//! pinned zbus version in Cargo.lock keeps this compiling, and tests/dbus_arguments.rs
//! fails if the wrapper stops answering.

use std::collections::HashMap;

use zbus::message::Flags;
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult2, Interface, SignalEmitter};
use zbus::zvariant::{OwnedValue, Value};
use zbus::{fdo, Connection, Message, ObjectServer};

use super::error::Error;

/// In-argument signature of every method of `org.patchd.Patchd1.Manager` (kept equal to
/// the checked-in introspection XML by a test).
pub const METHOD_SIGNATURES: &[(&str, &str)] = &[
    ("Check", ""),
    ("Install", "sa{sv}"),
    ("Switch", "a{sv}"),
    ("Cancel", ""),
    ("Rollback", "s"),
    ("MarkGood", ""),
    ("MarkBad", "s"),
    ("Hold", "sss"),
    ("ReleaseHold", ""),
    ("Repair", ""),
    ("GetStatus", ""),
    ("GetHistory", "a{sv}"),
    ("GetInventory", ""),
    ("VerifyAudit", ""),
];

/// The in-argument signature of `method`, if it is one of ours.
pub fn expected_signature(method: &str) -> Option<&'static str> {
    METHOD_SIGNATURES
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, s)| *s)
}

/// Why a body of signature `got` is refused for `method`, or `None` when it fits (or the
/// method is not ours, which the wrapped interface answers as unknown).
pub fn signature_problem(method: &str, got: &str) -> Option<String> {
    let want = expected_signature(method)?;
    (got != want).then(|| {
        let shown: String = got.chars().take(64).collect();
        format!("{method} takes arguments of D-Bus type \"{want}\", not \"{shown}\"")
    })
}

/// `I` with the body signature checked before dispatch.
pub struct Checked<I>(pub I);

#[async_trait::async_trait]
impl<I: Interface> Interface for Checked<I> {
    fn name() -> InterfaceName<'static>
    where
        Self: Sized,
    {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.0.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&zbus::message::Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<fdo::Result<OwnedValue>> {
        self.0
            .get(property_name, server, connection, header, emitter)
            .await
    }

    async fn get_all(
        &self,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&zbus::message::Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedValue>> {
        self.0.get_all(server, connection, header, emitter).await
    }

    fn set<'call>(
        &'call self,
        property_name: &'call str,
        value: &'call Value<'_>,
        server: &'call ObjectServer,
        connection: &'call Connection,
        header: Option<&'call zbus::message::Header<'_>>,
        emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult2<'call> {
        self.0
            .set(property_name, value, server, connection, header, emitter)
    }

    async fn set_mut(
        &mut self,
        property_name: &str,
        value: &Value<'_>,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&zbus::message::Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<fdo::Result<()>> {
        self.0
            .set_mut(property_name, value, server, connection, header, emitter)
            .await
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult2<'call> {
        let got = msg.body().signature().to_string_no_parens();
        let Some(problem) = signature_problem(name.as_str(), &got) else {
            return self.0.call(server, connection, msg, name);
        };
        DispatchResult2::Async(Box::pin(async move {
            let hdr = msg.header();
            tracing::info!(
                method = name.as_str(),
                signature = %got,
                sender = ?hdr.sender(),
                "refused a call with the wrong argument types"
            );
            if hdr.primary().flags().contains(Flags::NoReplyExpected) {
                return Ok(());
            }
            connection
                .reply_dbus_error(&hdr, Error::InvalidArgument(problem))
                .await
                .map(|_| ())
                .map_err(|e| fdo::Error::Failed(e.to_string()))
        }))
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult2<'call> {
        self.0.call_mut(server, connection, msg, name)
    }

    fn introspect_to_writer(&self, writer: &mut dyn std::fmt::Write, level: usize) {
        self.0.introspect_to_writer(writer, level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_signatures_are_named() {
        assert_eq!(signature_problem("Install", "sa{sv}"), None);
        assert_eq!(signature_problem("Check", ""), None);
        assert!(signature_problem("Install", "u").is_some_and(|m| m.contains("sa{sv}")));
        assert!(signature_problem("Check", "s").is_some());
        // Not ours: left to the wrapped interface (UnknownMethod).
        assert_eq!(signature_problem("Reboot", "s"), None);
    }

    /// The table says what the checked-in introspection XML says.
    #[test]
    fn table_matches_introspection_xml() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(crate::dbus::INTROSPECTION_XML_PATH);
        let xml = std::fs::read_to_string(&path).unwrap();
        let mut found = Vec::new();
        for chunk in xml.split("<method name=\"").skip(1) {
            let name = chunk.split('"').next().unwrap().to_owned();
            let body = chunk.split("</method>").next().unwrap();
            let sig: String = body
                .lines()
                .filter(|l| l.contains("direction=\"in\""))
                .map(|l| {
                    l.split("type=\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                })
                .collect();
            found.push((name, sig));
        }
        let table: Vec<(String, String)> = METHOD_SIGNATURES
            .iter()
            .map(|(m, s)| (m.to_string(), s.to_string()))
            .collect();
        found.sort();
        let mut table_sorted = table.clone();
        table_sorted.sort();
        assert_eq!(found, table_sorted, "{}", path.display());
    }
}
