//! Who may change anything: polkit `CheckAuthorization` with the caller's
//! `system-bus-name` subject (never a PID, which could be recycled), or — for tests on a
//! private bus only — a fixed list of uids.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zbus::message::{Flags, Header};
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use super::types::Caller;

/// How mutating calls are authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// Ask `org.freedesktop.PolicyKit1` on the same bus (production).
    Polkit,
    /// Allow exactly these uids, deny everyone else without asking polkit. For tests on a
    /// private bus where no polkitd runs; the daemon refuses it on the system bus.
    Uids(Vec<u32>),
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    /// `polkit` or `uids:0,1000`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "polkit" {
            return Ok(AuthMode::Polkit);
        }
        let Some(list) = s.strip_prefix("uids:") else {
            return Err(format!(
                "unknown auth mode {s:?}: expected polkit or uids:UID,…"
            ));
        };
        list.split(',')
            .map(|u| {
                u.trim()
                    .parse::<u32>()
                    .map_err(|e| format!("bad uid {u:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(AuthMode::Uids)
    }
}

/// The polkit actions of patchd (`systemd/org.patchd.patchd1.policy`). Which method asks
/// for which is declared in [`super::methods::METHODS`]; the list the policy must declare
/// is [`super::methods::actions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Check,
    Install,
    Switch,
    Rollback,
    Hold,
    Mark,
    Repair,
    Approve,
    Retry,
    Fleet,
}

impl Action {
    pub fn id(self) -> &'static str {
        match self {
            Action::Check => "org.patchd.patchd1.check",
            Action::Install => "org.patchd.patchd1.install",
            Action::Switch => "org.patchd.patchd1.switch",
            Action::Rollback => "org.patchd.patchd1.rollback",
            Action::Hold => "org.patchd.patchd1.hold",
            Action::Mark => "org.patchd.patchd1.mark",
            Action::Repair => "org.patchd.patchd1.repair",
            Action::Approve => "org.patchd.patchd1.approve",
            Action::Retry => "org.patchd.patchd1.retry",
            Action::Fleet => "org.patchd.patchd1.fleet",
        }
    }
}

/// Outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the text says why (for the caller and the audit record).
    Denied(String),
}

/// Identify the sender of `hdr` through the bus daemon.
pub async fn caller_of(conn: &Connection, hdr: &Header<'_>) -> zbus::Result<Caller> {
    let sender = hdr
        .sender()
        .ok_or_else(|| zbus::Error::Failure("method call without sender".into()))?
        .to_owned();
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = dbus.get_connection_unix_user(sender.clone().into()).await?;
    Ok(Caller {
        uid,
        bus_name: sender.to_string(),
    })
}

/// Decide whether `caller` (the sender of `hdr`) may perform `action`. Fails closed: if
/// polkit cannot be asked, the answer is a denial naming the reason.
pub async fn authorize(
    mode: &AuthMode,
    conn: &Connection,
    hdr: &Header<'_>,
    caller: &Caller,
    action: Action,
) -> Decision {
    match mode {
        AuthMode::Uids(uids) => {
            if uids.contains(&caller.uid) {
                Decision::Allowed
            } else {
                Decision::Denied(format!(
                    "uid {} may not perform {} (test authorization mode)",
                    caller.uid,
                    action.id()
                ))
            }
        }
        AuthMode::Polkit => match polkit_check(conn, hdr, action).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(action = action.id(), error = %e, "polkit check failed; denying");
                Decision::Denied(format!("cannot check authorization with polkit: {e}"))
            }
        },
    }
}

async fn polkit_check(
    conn: &Connection,
    hdr: &Header<'_>,
    action: Action,
) -> zbus::Result<Decision> {
    // Only prompt (through an authentication agent) when the caller said it can wait.
    let interactive = hdr.primary().flags().contains(Flags::AllowInteractiveAuth);
    Ok(match polkit_answer(conn, hdr, action, interactive).await? {
        Right::Yes => Decision::Allowed,
        Right::Auth(why) | Right::No(why) => Decision::Denied(why),
    })
}

async fn polkit_answer(
    conn: &Connection,
    hdr: &Header<'_>,
    action: Action,
    interactive: bool,
) -> zbus::Result<Right> {
    let subject = Subject::new_for_message_header(hdr)
        .map_err(|e| zbus::Error::Failure(format!("polkit subject: {e}")))?;
    let authority = AuthorityProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let flags = if interactive {
        CheckAuthorizationFlags::AllowUserInteraction.into()
    } else {
        Default::default()
    };
    let details: HashMap<&str, &str> = HashMap::new();
    let r = authority
        .check_authorization(&subject, action.id(), &details, flags, "")
        .await?;
    if r.is_authorized {
        Ok(Right::Yes)
    } else if r.is_challenge {
        Ok(Right::Auth(format!(
            "{} requires authentication (run as root, or through an authentication agent)",
            action.id()
        )))
    } else {
        Ok(Right::No(format!(
            "{} not permitted by polkit",
            action.id()
        )))
    }
}

/// What the caller would be answered for an action now, without being asked for a
/// password: for clients that disable what their user may not do (`GetAuthorizations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Right {
    Yes,
    /// Only after authentication (polkit's challenge); the text is the denial a call
    /// without it gets.
    Auth(String),
    /// Not at all; the text says why.
    No(String),
}

impl Right {
    /// `{"result": "yes"|"auth"|"no", "text": …}`, as `GetAuthorizations` lists it.
    pub fn to_json(&self) -> serde_json::Value {
        let (result, text) = match self {
            Right::Yes => ("yes", ""),
            Right::Auth(t) => ("auth", t.as_str()),
            Right::No(t) => ("no", t.as_str()),
        };
        serde_json::json!({ "result": result, "text": text })
    }
}

/// [`authorize`]'s answer for `caller` and `action`, asked without interaction and
/// failing closed the same way.
pub async fn right(
    mode: &AuthMode,
    conn: &Connection,
    hdr: &Header<'_>,
    caller: &Caller,
    action: Action,
) -> Right {
    match mode {
        AuthMode::Uids(_) => match authorize(mode, conn, hdr, caller, action).await {
            Decision::Allowed => Right::Yes,
            Decision::Denied(why) => Right::No(why),
        },
        AuthMode::Polkit => match polkit_answer(conn, hdr, action, false).await {
            Ok(r) => r,
            Err(e) => Right::No(format!("cannot check authorization with polkit: {e}")),
        },
    }
}

/// How many denials reach the audit log: a local user looping on a refused call must
/// neither fill the disk nor drown the trail. Up to `burst` per `window` are audited; the
/// rest go to the journal only, and the next audited one says how many were left out.
#[derive(Debug, Clone)]
pub struct DenialBudget {
    burst: u32,
    window: Duration,
    start: Option<Instant>,
    used: u32,
    left_out: u64,
}

impl Default for DenialBudget {
    fn default() -> Self {
        Self::new(30, Duration::from_secs(60))
    }
}

impl DenialBudget {
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            start: None,
            used: 0,
            left_out: 0,
        }
    }

    /// `Some(n)`: audit this denial, noting `n` earlier ones that were not; `None`:
    /// journal only.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window)
        {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.left_out))
        } else {
            self.left_out += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_budget_limits_and_reports_left_out() {
        let t0 = Instant::now();
        let mut b = DenialBudget::new(2, Duration::from_secs(60));
        assert_eq!(b.admit(t0), Some(0));
        assert_eq!(b.admit(t0), Some(0));
        assert_eq!(b.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(b.admit(t0 + Duration::from_secs(2)), None);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            b.admit(later),
            Some(2),
            "the next audited one counts the gap"
        );
        assert_eq!(b.admit(later), Some(0));
    }

    #[test]
    fn auth_mode_parses() {
        assert_eq!("polkit".parse::<AuthMode>(), Ok(AuthMode::Polkit));
        assert_eq!(
            "uids:0,1000".parse::<AuthMode>(),
            Ok(AuthMode::Uids(vec![0, 1000]))
        );
        assert!("everyone".parse::<AuthMode>().is_err());
        assert!("uids:x".parse::<AuthMode>().is_err());
    }
}
