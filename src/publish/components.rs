//! Components of a release on the publisher's side: the `--component` form of
//! `patchpub add` and placing each component's file as a TUF target.

use std::path::PathBuf;

use super::images;
use super::PublishError;
use crate::manifest::{Component, ComponentMethod, Compression, Kind, Rollback, Severity};
use crate::trust::metadata::TargetFile;

/// One component of a new release: its manifest entry without the file's facts.
#[derive(Debug, Clone)]
pub struct ComponentInput {
    pub name: String,
    pub version: String,
    pub method: ComponentMethod,
    pub file: PathBuf,
    pub needs_reboot: bool,
    pub order: u32,
    pub rollback: Rollback,
    pub units: Vec<String>,
    pub kind: Option<Kind>,
    pub severity: Option<Severity>,
    pub cves: Vec<String>,
}

/// `name=web,version=1.3,method=app-bundle,file=web.tar` plus any of `order=N`,
/// `rollback=ab|reinstall_previous|none` (default: `ab` for app-bundle and sysext,
/// `reinstall_previous` for handler, `none` for firmware), `units=a.service+b.service`,
/// `needs_reboot=true|false`, `kind=…`, `severity=…`, `cves=CVE-…+CVE-…`.
pub fn parse_component_spec(s: &str) -> Result<ComponentInput, String> {
    let mut name = None;
    let mut version = None;
    let mut method = None;
    let mut file = None;
    let mut c = ComponentInput {
        name: String::new(),
        version: String::new(),
        method: ComponentMethod::AppBundle,
        file: PathBuf::new(),
        needs_reboot: false,
        order: 0,
        rollback: Rollback::Ab,
        units: Vec::new(),
        kind: None,
        severity: None,
        cves: Vec::new(),
    };
    let mut rollback = None;
    let plus = |v: &str| -> Vec<String> {
        v.split('+')
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    };
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("component {s:?}: expected key=value, got {part:?}"))?;
        let bad = |e: String| format!("component {s:?}: {e}");
        match k {
            "name" => name = Some(v.to_string()),
            "version" => version = Some(v.to_string()),
            "method" => method = Some(v.parse::<ComponentMethod>().map_err(bad)?),
            "file" => file = Some(PathBuf::from(v)),
            "order" => {
                c.order = v
                    .parse()
                    .map_err(|_| bad(format!("order {v:?} is not a number")))?
            }
            "rollback" => rollback = Some(v.parse::<Rollback>().map_err(bad)?),
            "units" => c.units = plus(v),
            "needs_reboot" => {
                c.needs_reboot = v
                    .parse()
                    .map_err(|_| bad(format!("needs_reboot {v:?} is not true or false")))?
            }
            "kind" => c.kind = Some(v.parse().map_err(bad)?),
            "severity" => c.severity = Some(v.parse().map_err(bad)?),
            "cves" => c.cves = plus(v),
            _ => {
                return Err(bad(format!(
                    "unknown key {k:?} (name, version, method, file, order, rollback, units, \
                     needs_reboot, kind, severity, cves)"
                )))
            }
        }
    }
    let need = |what: &str| format!("component {s:?}: {what}= is required");
    c.name = name.ok_or_else(|| need("name"))?;
    c.version = version.ok_or_else(|| need("version"))?;
    c.method = method.ok_or_else(|| need("method"))?;
    c.file = file
        .filter(|f| !f.as_os_str().is_empty())
        .ok_or_else(|| need("file"))?;
    c.rollback = rollback.unwrap_or(c.method.rollbacks()[0]);
    Ok(c)
}

/// Place `c`'s file (stored as it is) as `releases/PRODUCT/VERSION/component.NAME` and
/// return its manifest entry and its target.
pub(crate) fn place(
    c: &ComponentInput,
    product: &str,
    version: &semver::Version,
    targets_dir: &std::path::Path,
) -> Result<(Component, String, TargetFile), PublishError> {
    crate::manifest::check_name("components.name", &c.name)?;
    let target = format!("releases/{product}/{version}/component.{}", c.name);
    let placed = images::place(&c.file, Compression::None, targets_dir, &target)?;
    let entry = Component {
        name: c.name.clone(),
        version: c.version.clone(),
        method: c.method,
        target: target.clone(),
        size: placed.uncompressed_size,
        sha256: placed.uncompressed_sha256.clone(),
        needs_reboot: c.needs_reboot,
        order: c.order,
        rollback: c.rollback,
        units: c.units.clone(),
        kind: c.kind,
        severity: c.severity,
        cves: c.cves.clone(),
    };
    Ok((entry, target, placed.target_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_specs() {
        let c = parse_component_spec(
            "name=web,version=1.3,method=app-bundle,file=web.tar,order=2,units=web.service+api.service",
        )
        .unwrap();
        assert_eq!(
            (c.name.as_str(), c.version.as_str(), c.order),
            ("web", "1.3", 2)
        );
        assert_eq!(c.rollback, Rollback::Ab);
        assert_eq!(c.units, ["web.service", "api.service"]);
        let h = parse_component_spec("name=mcu,version=7,method=handler,file=m.bin").unwrap();
        assert_eq!(h.rollback, Rollback::ReinstallPrevious);
        let f = parse_component_spec("name=bmc,version=2.3,method=firmware,file=b.cab").unwrap();
        assert_eq!(
            (f.method, f.rollback),
            (ComponentMethod::Firmware, Rollback::None)
        );
        let x = parse_component_spec("name=tools,version=2,method=sysext,file=tools.raw").unwrap();
        assert_eq!(
            (x.method, x.rollback),
            (ComponentMethod::Sysext, Rollback::Ab)
        );
        for bad in [
            "name=web,version=1,file=x",
            "name=web,version=1,method=floppy,file=x",
            "name=web,version=1,method=handler,file=x,colour=red",
            "name=web,version=1,method=handler,file=x,order=-1",
            "name=web,version=1,method=handler",
        ] {
            assert!(parse_component_spec(bad).is_err(), "{bad}");
        }
    }
}
