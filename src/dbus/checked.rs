//! A call whose body does not fit its row in [`super::methods::METHODS`] is refused with
//! our own `org.patchd.Patchd1.Error.InvalidArgument`, like every other malformed
//! argument: first the D-Bus signature, then each argument's [`ArgRule`].
//!
//! zbus's generated dispatcher would answer a wrong signature itself, with its own
//! `org.freedesktop.zbus.Error`, before any of our code runs. [`Checked`] wraps the
//! generated interface, checks the body against the table first and hands everything
//! else (properties, introspection, the calls themselves) to the wrapped interface
//! unchanged. Checking the rules here, not in each method body, is what makes the table
//! the one place a method's limits are declared: a body cannot forget them. The bodies
//! only convert (empty to `None`, text to a timestamp). `zbus::object_server::Interface`
//! is marked unstable by zbus; the pinned zbus version in Cargo.lock keeps this
//! compiling, and tests/dbus_arguments.rs fails if the wrapper stops answering.

use std::collections::HashMap;

use zbus::message::Flags;
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult2, Interface, SignalEmitter};
use zbus::zvariant::{OwnedValue, Structure, Value};
use zbus::{fdo, Connection, Message, ObjectServer};

use super::error::Error;
use super::limits::{self, ArgError, ArgLimits, Options};
use super::methods::{self, ArgRule};

/// The in-argument signature of `method`, if it is one of ours.
pub fn expected_signature(method: &str) -> Option<String> {
    methods::method(method).map(|m| m.in_signature())
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

/// Check one argument against its rule (the same checks, in the same order, the method
/// bodies made before the table existed).
pub fn check_arg(
    name: &'static str,
    rule: ArgRule,
    value: &Value<'_>,
    limits: &ArgLimits,
) -> Result<(), ArgError> {
    let text = || -> Result<&str, ArgError> {
        <&str>::try_from(value).map_err(|_| ArgError {
            what: name,
            problem: "must be a string (s)".into(),
        })
    };
    let dict = || -> Result<HashMap<String, OwnedValue>, ArgError> {
        value
            .try_clone()
            .ok()
            .and_then(|v| HashMap::<String, OwnedValue>::try_from(v).ok())
            .ok_or_else(|| ArgError {
                what: name,
                problem: "must be a dictionary (a{sv})".into(),
            })
    };
    match rule {
        ArgRule::Version => limits::version_arg(name, text()?, limits.release).map(drop),
        ArgRule::Text { required } => {
            limits::text_arg(name, text()?, limits.reason, required).map(drop)
        }
        ArgRule::Timestamp => limits::timestamp_arg(name, text()?).map(drop),
        ArgRule::Options(keys) => Options::new(&dict()?, keys, limits).map(drop),
        ArgRule::HistoryFilter => limits::history_filter(&dict()?, limits).map(drop),
        ArgRule::Fd => match value {
            Value::Fd(_) => Ok(()),
            _ => Err(ArgError {
                what: name,
                problem: "must be a file descriptor (h)".into(),
            }),
        },
    }
}

/// Why the call `msg` to `member` is refused, or `None` when it fits its row (or is not
/// one of ours).
fn problem(member: &str, msg: &Message, limits: &ArgLimits) -> Option<String> {
    let got = msg.body().signature().to_string_no_parens();
    if let Some(p) = signature_problem(member, &got) {
        return Some(p);
    }
    let m = methods::method(member)?;
    if m.args.is_empty() {
        return None;
    }
    let body = msg.body();
    let body = match body.deserialize::<Structure<'_>>() {
        Ok(b) => b,
        Err(e) => return Some(format!("malformed arguments: {e}")),
    };
    for (arg, value) in m.args.iter().zip(body.fields()) {
        if let Err(e) = check_arg(arg.name, arg.rule, value, limits) {
            return Some(e.to_string());
        }
    }
    None
}

/// `I` with each call checked against its row before dispatch.
pub struct Checked<I> {
    pub inner: I,
    pub limits: ArgLimits,
}

#[async_trait::async_trait]
impl<I: Interface> Interface for Checked<I> {
    fn name() -> InterfaceName<'static>
    where
        Self: Sized,
    {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.inner.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&zbus::message::Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<fdo::Result<OwnedValue>> {
        self.inner
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
        self.inner
            .get_all(server, connection, header, emitter)
            .await
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
        self.inner
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
        self.inner
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
        let Some(problem) = problem(name.as_str(), msg, &self.limits) else {
            return self.inner.call(server, connection, msg, name);
        };
        let got = msg.body().signature().to_string_no_parens();
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
        self.inner.call_mut(server, connection, msg, name)
    }

    fn introspect_to_writer(&self, writer: &mut dyn std::fmt::Write, level: usize) {
        self.inner.introspect_to_writer(writer, level)
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
}
