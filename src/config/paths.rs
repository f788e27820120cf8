//! `server.model_dirs`: the folders model and adapter files may be loaded from. Every model
//! path in the file (`[compressors.NAME] model` and `lora`, `[shadow] embedding_model`) must
//! resolve inside one of them — symbolic links and `..` followed — so that a configuration
//! change (a reload, an environment override) cannot make condenser read an arbitrary file as a
//! model. Relative paths are taken from the working directory, as everywhere in the file.

use std::path::{Component, Path, PathBuf};

use super::ConfigError;

/// The folders' absolute, resolved forms.
pub(super) fn resolve_dirs(dirs: &[String]) -> Result<Vec<PathBuf>, ConfigError> {
    if dirs.is_empty() {
        return Err(ConfigError::invalid(
            "server.model_dirs",
            "must name at least one folder",
        ));
    }
    dirs.iter()
        .map(|dir| {
            resolve(Path::new(dir)).ok_or_else(|| {
                ConfigError::invalid("server.model_dirs", format!("cannot resolve `{dir}`"))
            })
        })
        .collect()
}

/// Refuses `path` (the value of `key`) unless it lies inside one of `dirs`.
pub(super) fn confine(key: &str, path: &Path, dirs: &[PathBuf]) -> Result<(), ConfigError> {
    let resolved = resolve(path)
        .ok_or_else(|| ConfigError::invalid(key, format!("cannot resolve `{}`", path.display())))?;
    if dirs.iter().any(|dir| resolved.starts_with(dir)) {
        return Ok(());
    }
    let allowed: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(ConfigError::invalid(
        key,
        format!(
            "`{}` is outside server.model_dirs ({}): add its folder there",
            path.display(),
            allowed.join(", ")
        ),
    ))
}

/// The absolute path with links resolved as far as the file system has it; the rest is
/// normalised lexically (`..` over a missing part is refused: `None`).
fn resolve(path: &Path) -> Option<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    if let Ok(real) = absolute.canonicalize() {
        return Some(real);
    }
    // The longest existing prefix is canonicalised; what follows must not climb out of it.
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name()?.to_os_string());
        existing = existing.parent()?.to_path_buf();
    }
    let mut resolved = existing.canonicalize().ok()?;
    for part in rest.iter().rev() {
        match Path::new(part).components().next()? {
            Component::Normal(name) => resolved.push(name),
            _ => return None,
        }
    }
    Some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_model_dirs_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let models = root.path().join("models");
        std::fs::create_dir(&models).expect("mkdir");
        std::fs::write(models.join("m.gguf"), b"x").expect("write");
        std::fs::write(root.path().join("secret"), b"x").expect("write");
        let dirs = resolve_dirs(&[models.display().to_string()]).expect("dirs");
        assert!(confine("k", &models.join("m.gguf"), &dirs).is_ok());
        assert!(confine("k", &models.join("not-yet.gguf"), &dirs).is_ok());
        let climbing = models.join("../secret");
        let error = confine("k", &climbing, &dirs)
            .expect_err("outside")
            .to_string();
        assert!(error.contains("outside server.model_dirs"), "{error}");
        assert!(confine("k", Path::new("/etc/passwd"), &dirs).is_err());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.path().join("secret"), models.join("link.gguf"))
                .expect("symlink");
            assert!(
                confine("k", &models.join("link.gguf"), &dirs).is_err(),
                "a link out of the folder is followed"
            );
        }
        assert!(confine("k", &models.join("missing/../../secret"), &dirs).is_err());
    }
}
