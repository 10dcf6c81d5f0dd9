//! `KEY=VALUE` files: `secrets.env`, `demo.env` and `dev.env` under the
//! data directory (owner-only, so secrets stay private).

use std::collections::BTreeMap;
use std::path::Path;

/// Sets `key` in a `KEY=VALUE` file, keeping its other lines.
pub(crate) fn update_env_file(path: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    let mut vars = read_env_file(path);
    vars.insert(key.to_owned(), value.to_owned());
    let pairs: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    write_env_file(path, &pairs)
}

/// Reads `KEY=VALUE` lines.
pub(crate) fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Writes `KEY=VALUE` lines, readable by the owner only (from the first
/// byte: no window where another user could read them).
pub(crate) fn write_env_file(path: &Path, vars: &[(&str, String)]) -> anyhow::Result<()> {
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    super::private::write_private(path, text.as_bytes())
}
