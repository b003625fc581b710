//! The rules of a release's `components` list (called from `Manifest::validate`).

use std::collections::HashSet;

use super::component::{Component, Method};
use super::parse::{check_cve, check_list, check_name, check_sha256, field_err};
use super::{check_target_path, ManifestError};

const MAX_COMPONENTS: usize = 32;
const MAX_UNITS: usize = 16;
const MAX_CVES: usize = 256;

pub(super) fn check(components: &[Component]) -> Result<(), ManifestError> {
    check_list("components", components, MAX_COMPONENTS)?;
    let mut names = HashSet::new();
    for (i, c) in components.iter().enumerate() {
        let f = |n: &str| format!("components[{i}].{n}");
        check_name(&f("name"), &c.name)?;
        if !names.insert(c.name.as_str()) {
            return Err(field_err(
                f("name"),
                format!("two components named {:?}", c.name),
            ));
        }
        check_name(&f("version"), &c.version)?;
        check_target_path(&f("target"), &c.target)?;
        check_sha256(&f("sha256"), &c.sha256)?;
        if !c.method.rollbacks().contains(&c.rollback) {
            let allowed: Vec<&str> = c.method.rollbacks().iter().map(|r| r.as_str()).collect();
            return Err(field_err(
                f("rollback"),
                format!(
                    "{} cannot be rolled back by {}; allowed: {}",
                    c.method,
                    c.rollback,
                    allowed.join(", ")
                ),
            ));
        }
        check_list(&f("units"), &c.units, MAX_UNITS)?;
        if !c.units.is_empty() && c.method != Method::AppBundle {
            return Err(field_err(
                f("units"),
                "only app-bundle components restart units",
            ));
        }
        for u in &c.units {
            if !crate::health::valid_unit_name(u) {
                return Err(field_err(
                    f("units"),
                    format!(
                        "{:?} is not a systemd unit name",
                        u.escape_debug().to_string()
                    ),
                ));
            }
        }
        if c.method == Method::AppBundle && c.needs_reboot {
            return Err(field_err(
                f("needs_reboot"),
                "an app-bundle is switched without a reboot",
            ));
        }
        if c.method == Method::Sysext && c.needs_reboot {
            return Err(field_err(
                f("needs_reboot"),
                "a sysext is merged by systemd-sysext refresh without a reboot",
            ));
        }
        check_list(&f("cves"), &c.cves, MAX_CVES)?;
        for (j, cve) in c.cves.iter().enumerate() {
            check_cve(&format!("components[{i}].cves[{j}]"), cve)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::component::Rollback;
    use super::*;

    fn app(name: &str) -> Component {
        Component {
            name: name.into(),
            version: "1.3".into(),
            method: Method::AppBundle,
            target: format!("releases/p/1.0.0/{name}.tar"),
            size: 10,
            sha256: "0".repeat(64),
            needs_reboot: false,
            order: 0,
            rollback: Rollback::Ab,
            units: vec!["web.service".into()],
            kind: None,
            severity: None,
            cves: vec![],
        }
    }

    #[test]
    fn firmware_switches_first_and_cannot_be_rolled_back() {
        let mut fw = app("bmc");
        fw.method = Method::Firmware;
        fw.rollback = Rollback::None;
        fw.units.clear();
        fw.order = 9;
        let (mut web, mut api) = (app("web"), app("api"));
        web.order = 1;
        api.order = 0;
        let list = [web, fw.clone(), api];
        check(&list).unwrap();
        let order: Vec<&str> = super::super::install_order(&list)
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(order, ["bmc", "api", "web"]);
        fw.rollback = Rollback::ReinstallPrevious;
        assert!(check(&[fw]).is_err(), "firmware has no rollback");
    }

    #[test]
    fn good_list_passes() {
        check(&[app("web"), app("api")]).unwrap();
    }

    #[test]
    fn each_rule_names_its_field() {
        type Mutation = Box<dyn Fn(&mut Component)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|c| c.name = "../x".into()), "components[0].name"),
            (
                Box::new(|c| c.version = "1 3".into()),
                "components[0].version",
            ),
            (
                Box::new(|c| c.target = "/abs".into()),
                "components[0].target",
            ),
            (Box::new(|c| c.sha256 = "ab".into()), "components[0].sha256"),
            (
                Box::new(|c| c.rollback = Rollback::ReinstallPrevious),
                "components[0].rollback",
            ),
            (
                Box::new(|c| c.units = vec!["a b".into()]),
                "components[0].units",
            ),
            (
                Box::new(|c| c.needs_reboot = true),
                "components[0].needs_reboot",
            ),
            (
                Box::new(|c| c.cves = vec!["x".into()]),
                "components[0].cves[0]",
            ),
            (
                Box::new(|c| {
                    c.method = Method::Handler;
                    c.rollback = Rollback::None;
                }),
                "components[0].units",
            ),
        ];
        for (mutate, field) in cases {
            let mut c = app("web");
            mutate(&mut c);
            let e = check(&[c]).unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
        let e = check(&[app("web"), app("web")]).unwrap_err().to_string();
        assert!(e.contains("two components named"), "{e}");
    }
}
