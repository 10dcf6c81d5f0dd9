//! The architecture's invariants, checked on the source tree (as
//! rust-analyzer's `tidy` does): no servers, no network, only files.
//!
//! - Role crates never depend on each other, and the libraries (`core`,
//!   `native`) depend on no role.
//! - The `unsafe` keyword appears only under `native/`.
//! - Every Rust source file starts with a `//!` line saying what it is.
//! - No test is switched off with an ignore attribute: a test that cannot
//!   run here says so and passes for the right reason, or it is deleted.
//!
//! ARCHITECTURE.md names this file beside each of these invariants.

use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Crates that run as roles (`vodfarm <role>`); the root package composes
/// them and is the only crate allowed to depend on more than one.
const ROLE_CRATES: &[(&str, &str)] = &[
    ("coordinator", "vodfarm-coordinator"),
    ("catalog", "vodfarm-catalog"),
    ("search", "vodfarm-search"),
    ("gpu-worker", "vodfarm-gpu-worker"),
    ("origin", "vodfarm-origin"),
    ("purger", "vodfarm-purger"),
    ("webhooks", "vodfarm-webhooks"),
    ("counts", "vodfarm-counts"),
];

/// Small libraries every role may use.
const LIBRARY_CRATES: &[(&str, &str)] = &[
    ("core", "vodfarm-core"),
    ("native", "vodfarm-native"),
    ("analytics", "vodfarm-analytics"),
];

/// The packages each member may depend on (besides crates.io ones).
fn allowed_deps(package: &str) -> &'static [&'static str] {
    match package {
        "vodfarm-core" => &[],
        "vodfarm-native" => &[],
        "vodfarm-gpu-worker" => &["vodfarm-core", "vodfarm-native"],
        "vodfarm-analytics" => &["vodfarm-core"],
        _ => &["vodfarm-core", "vodfarm-analytics"],
    }
}

/// The `vodfarm-*` packages named in any dependency table of a manifest
/// (`[dependencies]`, `[dev-dependencies]`, `[build-dependencies]` and
/// their target-specific forms).
fn workspace_deps(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line
                .trim_matches(|c| c == '[' || c == ']')
                .ends_with("dependencies");
            continue;
        }
        if !in_deps {
            continue;
        }
        if let Some((name, _)) = line.split_once('=') {
            // `vodfarm-core.workspace = true` names `vodfarm-core`.
            let name = name.trim().trim_matches('"');
            let name = name.split('.').next().unwrap_or(name);
            if name.starts_with("vodfarm-") || name.starts_with("vodfarm_") {
                deps.push(name.replace('_', "-"));
            }
        }
    }
    deps
}

#[test]
fn role_crates_do_not_depend_on_each_other() {
    let mut problems = Vec::new();
    for (dir, package) in ROLE_CRATES.iter().chain(LIBRARY_CRATES) {
        let manifest = std::fs::read_to_string(root().join(dir).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{dir}/Cargo.toml: {e}"));
        assert!(
            manifest.contains(&format!("name = \"{package}\"")),
            "{dir}/Cargo.toml is not package {package}"
        );
        for dep in workspace_deps(&manifest) {
            if !allowed_deps(package).contains(&dep.as_str()) {
                problems.push(format!("{package} depends on {dep}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dependencies must point one way (vodfarm → roles → core; gpu-worker → native): {problems:#?}"
    );
}

#[test]
fn the_dependency_parser_sees_every_table() {
    // The checks above are only as good as this parser: prove it finds a
    // forbidden edge in each kind of table.
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nvodfarm-core.workspace = true\n\
                    [dev-dependencies]\nvodfarm-origin = { path = \"../origin\" }\n\
                    [target.'cfg(unix)'.build-dependencies]\nvodfarm_catalog = \"1\"\n";
    assert_eq!(
        workspace_deps(manifest),
        ["vodfarm-core", "vodfarm-origin", "vodfarm-catalog"]
    );
}

/// Every `.rs` file of the workspace that git would track (no build
/// output, no node_modules).
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && !matches!(name.as_ref(), "target" | "node_modules") {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root(), &mut files);
    files.sort();
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A line with its `//` comment removed (string literals containing `//`
/// are rare enough here; a false hit shows up as a clear failure).
fn code_of(line: &str) -> &str {
    line.split_once("//").map_or(line, |(code, _)| code)
}

/// Whether `code` holds `word` as a whole identifier.
fn has_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

#[test]
fn unsafe_only_in_native() {
    // Spelled in two halves so this file does not trip its own check.
    let keyword = ["un", "safe"].concat();
    let native = root().join("native");
    let mut found = Vec::new();
    for file in rust_files() {
        if file.starts_with(&native) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if has_word(code_of(line), &keyword) {
                found.push(format!("{}:{}: {}", relative(&file), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "{keyword} outside native/: {found:#?}");
}

#[test]
fn every_source_file_says_what_it_is() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| relative(&f))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` line: {missing:#?}"
    );
}

#[test]
fn no_test_is_ignored() {
    let attribute = ["#[", "ignore"].concat();
    let mut found = Vec::new();
    for file in rust_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if code_of(line).contains(&attribute) {
                found.push(format!("{}:{}", relative(&file), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "ignored tests: {found:#?}");
}

#[test]
fn the_word_checks_see_what_they_look_for() {
    let word = ["un", "safe"].concat();
    assert!(has_word(&format!("    let x = {word} {{ f() }};"), &word));
    assert!(!has_word(&format!("#![forbid({word}_code)]"), &word));
    assert!(!has_word(&format!("let not{word} = 1;"), &word));
    assert_eq!(code_of("let a = 1; // unsafe here"), "let a = 1; ");
}
