//! The servers `vodfarm dev` runs for itself when none are configured: a
//! private PostgreSQL cluster (initdb/pg_ctl) and a private redis-server,
//! both under the data directory, both on loopback only.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Where Debian (and most distributions) keep the server binaries that are
/// not on `PATH`.
fn pg_bin(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VODFARM_PG_BIN") {
        return Ok(PathBuf::from(dir).join(name));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.exists());
    versions.sort();
    if let Some(p) = versions.pop() {
        return Ok(p);
    }
    which(name).with_context(|| {
        format!("PostgreSQL's {name} not found: install PostgreSQL (apt install postgresql) or set DATABASE_URL")
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Whether this process runs as root: `/proc/self` is owned by the
/// process's effective uid (std has no `geteuid`, and `unsafe` stays in
/// `native/`).
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: there, run its tools as the
/// `postgres` system user, owning the cluster directory.
fn pg_command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

async fn run_checked(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A private PostgreSQL cluster under `DIR/postgres`.
#[derive(Debug)]
pub struct PrivatePostgres {
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Initialises the cluster on first use, starts it on `port` (loopback
    /// only, trust auth for the local `postgres` user) and waits until it
    /// accepts connections. A cluster already running there is reused.
    pub async fn start(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let data = dir.join("postgres");
        let as_postgres = is_root();
        let pg = PrivatePostgres {
            data: data.clone(),
            port,
            as_postgres,
        };
        if !data.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&data)?;
            if as_postgres {
                run_checked(
                    {
                        let mut c = Command::new("chown");
                        c.args(["-R", "postgres:postgres"]).arg(&data);
                        c
                    },
                    "chown of the cluster directory",
                )
                .await?;
            }
            tracing::info!(dir = %data.display(), "creating a private PostgreSQL cluster");
            let mut init = pg_command(&pg_bin("initdb")?, as_postgres);
            init.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ]);
            run_checked(init, "initdb").await?;
        }
        if pg.is_ready().await {
            tracing::info!(port, "reusing the running private PostgreSQL");
            return Ok(pg);
        }
        let sock = std::env::temp_dir();
        let mut ctl = pg_command(&pg_bin("pg_ctl")?, as_postgres);
        ctl.arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=on",
                sock.display()
            ))
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        run_checked(ctl, "pg_ctl start").await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pg.is_ready().await {
            if Instant::now() > deadline {
                bail!(
                    "private PostgreSQL did not accept connections; see {}",
                    data.join("server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(port, "private PostgreSQL started");
        Ok(pg)
    }

    async fn is_ready(&self) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
            && sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(2))
                .connect(&format!(
                    "postgres://postgres@127.0.0.1:{}/postgres",
                    self.port
                ))
                .await
                .is_ok()
    }

    /// The URL of database `db` in this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the cluster at once (immediate shutdown, recovered at the
    /// next start), without an async runtime: for `Drop` guards.
    pub fn stop_blocking(&self) -> anyhow::Result<()> {
        let bin = pg_bin("pg_ctl")?;
        let mut ctl = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            std::process::Command::new(bin)
        };
        let out = ctl
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output()
            .context("running pg_ctl stop")?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stops the cluster (fast shutdown: sessions end, data is safe).
    pub async fn stop(&self) -> anyhow::Result<()> {
        let mut ctl = pg_command(&pg_bin("pg_ctl")?, self.as_postgres);
        ctl.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]);
        run_checked(ctl, "pg_ctl stop").await
    }
}

/// A private redis-server, a child of this process.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    /// Starts redis-server on loopback `port`, keeping its data under
    /// `DIR/redis`, and waits until it answers.
    pub async fn start(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let bin = which("redis-server").context(
            "redis-server not found: install it (apt install redis-server) or set REDIS_URL",
        )?;
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "60 1",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&data)
            .arg("--logfile")
            .arg(data.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!(
                    "private redis-server did not start; see {}",
                    data.join("redis.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(port, "private redis-server started");
        Ok(PrivateRedis { child, port })
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops it (SIGTERM: redis saves and exits).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}
