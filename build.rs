//! Build script: rebuild when a migration changes, since `sqlx::migrate!`
//! embeds `migrations/` into the binary.

fn main() {
    // sqlx::migrate! embeds migrations/ at compile time; rebuild when they change.
    println!("cargo:rerun-if-changed=migrations");
}
