//! `vodfarm`: see `vodfarm --help`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vodfarm::cli::main().await
}
