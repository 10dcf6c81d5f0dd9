//! Owner-only files and directories: dev's data directory holds the
//! database, the originals of private videos and every secret, so other
//! users of the machine must not read any of it.

use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The data directory's mode: the owner only, except that a root-run dev
/// lets others *traverse* it (not list it), because its PostgreSQL runs
/// as the `postgres` user and must reach `DIR/postgres` (itself 0700,
/// owned by `postgres`). Everything inside is owner-only either way.
pub(crate) fn data_dir_mode(as_root: bool) -> u32 {
    if as_root {
        0o711
    } else {
        0o700
    }
}

/// Creates `dir` (and its parents) if needed and makes it `mode`.
pub(crate) fn create_dir_with_mode(dir: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // An existing directory keeps its mode unless it is set.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("restricting {}", dir.display()))
}

/// Creates `dir` if needed, readable by its owner only (0700).
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    create_dir_with_mode(dir, 0o700)
}

/// Writes `bytes` to `path`, readable by its owner only (0600) from the
/// first byte: the file is created with that mode, and an existing one is
/// restricted before it is rewritten.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.exists() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates `path` empty if missing, and makes it owner-only (0600).
pub(crate) fn touch_private(path: &Path) -> anyhow::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn files_and_directories_are_owner_only() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir)?;
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("secret");
        std::fs::write(&f, "old")?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))?;
        write_private(&f, b"new")?;
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read_to_string(&f)?, "new");
        let log = dir.join("log");
        touch_private(&log)?;
        assert_eq!(mode(&log), 0o600);
        create_dir_with_mode(&dir, data_dir_mode(true))?;
        assert_eq!(mode(&dir), 0o711);
        Ok(())
    }
}
