//! Small text forms used on the `patchpub` command line, parsed here so the binary stays
//! thin and the forms are tested.

use std::path::PathBuf;

use super::repo::ImageInput;
use crate::manifest::{Compression, ImageFormat, RolloutStage};

/// `[COMPONENT:]SLOT_CLASS=FILE` or just `FILE` (component `os`, slot class `rootfs`).
pub fn parse_image_spec(
    s: &str,
    format: ImageFormat,
    compress: bool,
) -> Result<ImageInput, String> {
    let compression = if compress {
        Compression::Zstd
    } else {
        Compression::None
    };
    let (component, slot_class, file) = match s.split_once('=') {
        Some((lhs, file)) => match lhs.split_once(':') {
            Some((c, sc)) => (c.to_string(), sc.to_string(), file),
            None => ("os".to_string(), lhs.to_string(), file),
        },
        None => ("os".to_string(), "rootfs".to_string(), s),
    };
    if file.is_empty() {
        return Err(format!("image {s:?}: no file"));
    }
    Ok(ImageInput {
        component,
        slot_class,
        file: PathBuf::from(file),
        format,
        compression,
    })
}

/// `tags=canary+beta,percent=10,after=24h` (any subset; `after` in s, m, h or d).
pub fn parse_stage(s: &str) -> Result<RolloutStage, String> {
    let mut st = RolloutStage {
        tags: Vec::new(),
        percent: 0,
        after_secs: 0,
    };
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("stage {s:?}: expected key=value, got {part:?}"))?;
        match k {
            "tags" => {
                st.tags = v
                    .split('+')
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect()
            }
            "percent" => {
                st.percent = v
                    .parse()
                    .map_err(|_| format!("stage {s:?}: percent {v:?} is not 0-100"))?
            }
            "after" => st.after_secs = parse_duration_secs(v)?,
            _ => {
                return Err(format!(
                    "stage {s:?}: unknown key {k:?} (tags, percent, after)"
                ))
            }
        }
    }
    Ok(st)
}

/// `90`, `90s`, `15m`, `24h`, `7d` → seconds.
pub fn parse_duration_secs(v: &str) -> Result<u64, String> {
    let (num, mult) = match v.char_indices().last() {
        Some((i, 's')) => (&v[..i], 1),
        Some((i, 'm')) => (&v[..i], 60),
        Some((i, 'h')) => (&v[..i], 3600),
        Some((i, 'd')) => (&v[..i], 86400),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("duration {v:?}: expected a number with s, m, h or d"))
}

/// `ROLE=VALUE` → (role, value).
pub fn parse_role_assignment(
    s: &str,
) -> Result<(crate::trust::metadata::RoleType, String), String> {
    let (r, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ROLE=VALUE"))?;
    let role = super::role_from_str(r).map_err(|e| e.to_string())?;
    Ok((role, v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_specs() {
        let i = parse_image_spec("a.img", ImageFormat::Raw, true).unwrap();
        assert_eq!(
            (i.component.as_str(), i.slot_class.as_str()),
            ("os", "rootfs")
        );
        let i = parse_image_spec("app:bundle=x.tar", ImageFormat::Tar, false).unwrap();
        assert_eq!(
            (i.component.as_str(), i.slot_class.as_str()),
            ("app", "bundle")
        );
        assert_eq!(i.compression, Compression::None);
        assert!(parse_image_spec("boot=", ImageFormat::Raw, true).is_err());
    }

    #[test]
    fn stages() {
        let s = parse_stage("tags=canary+beta,percent=10,after=24h").unwrap();
        assert_eq!(s.tags, vec!["canary", "beta"]);
        assert_eq!((s.percent, s.after_secs), (10, 86400));
        assert!(parse_stage("percent=x").is_err());
        assert!(parse_stage("colour=red").is_err());
        assert_eq!(parse_duration_secs("7d").unwrap(), 7 * 86400);
    }
}
