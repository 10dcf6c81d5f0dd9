//! The servers `vodfarm dev` runs for itself when none are configured: a
//! private PostgreSQL cluster (initdb/pg_ctl) and a private redis-server,
//! both under the data directory, both on loopback only, both behind a
//! password kept in `secrets.env`, so other users of the machine cannot
//! read the data (PostgreSQL: scram-sha-256 over TCP, peer on its socket;
//! a cluster made with `trust` by an older dev is switched over).

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
pub(crate) fn is_root() -> bool {
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
pub struct PrivatePostgres {
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    password: String,
}

// By hand: the password stays out of logs.
impl std::fmt::Debug for PrivatePostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivatePostgres")
            .field("data", &self.data)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PrivatePostgres {
    /// Initialises the cluster on first use (superuser `postgres` with
    /// `password`), starts it on `port` (loopback only) and waits until it
    /// accepts connections. A cluster already running there is reused.
    pub async fn start(dir: &Path, port: u16, password: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !password.is_empty() && vodfarm_core::ids::is_valid_public_id(password),
            "the private PostgreSQL password must be URL-safe"
        );
        let data = dir.join("postgres");
        let as_postgres = is_root();
        let pg = PrivatePostgres {
            data: data.clone(),
            port,
            as_postgres,
            password: password.to_owned(),
        };
        if !data.join("PG_VERSION").exists() {
            pg.init(dir).await?;
        }
        if pg.is_ready().await {
            tracing::info!(port, "reusing the running private PostgreSQL");
            pg.require_password().await?;
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
        pg.require_password().await?;
        Ok(pg)
    }

    /// initdb: password authentication over TCP, peer on the socket.
    async fn init(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data)?;
        // initdb reads the password from a file (never the command line,
        // which every user can see); it lives only for the initdb run.
        let pwfile = dir.join(".postgres-password");
        super::private::write_private(&pwfile, format!("{}\n", self.password).as_bytes())?;
        let made = async {
            if self.as_postgres {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"])
                    .arg(&self.data)
                    .arg(&pwfile);
                run_checked(c, "chown of the cluster directory").await?;
            }
            tracing::info!(dir = %self.data.display(), "creating a private PostgreSQL cluster");
            let mut init = pg_command(&pg_bin("initdb")?, self.as_postgres);
            init.arg("-D")
                .arg(&self.data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["-E", "UTF8", "--no-instructions"]);
            run_checked(init, "initdb").await
        }
        .await;
        let _ = std::fs::remove_file(&pwfile);
        made
    }

    /// A cluster an older dev made with `trust` (any local user could
    /// connect) gets the password and password authentication.
    async fn require_password(&self) -> anyhow::Result<()> {
        let hba_path = self.data.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&hba_path)
            .with_context(|| format!("reading {}", hba_path.display()))?;
        let Some(fixed) = without_trust(&hba) else {
            return Ok(());
        };
        tracing::warn!("the private PostgreSQL accepted any local user (trust): switching it to password authentication");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.url("postgres"))
            .await
            .context("connecting to the private PostgreSQL")?;
        // The password is URL-safe (checked in `start`): no quoting issue.
        let alter = format!("ALTER ROLE postgres PASSWORD '{}'", self.password);
        sqlx::query(sqlx::AssertSqlSafe(alter))
            .execute(&pool)
            .await?;
        std::fs::write(&hba_path, fixed)
            .with_context(|| format!("writing {}", hba_path.display()))?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(())
    }

    async fn is_ready(&self) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
            && sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(2))
                .connect(&self.url("postgres"))
                .await
                .is_ok()
    }

    /// The URL of database `db` in this cluster (with the password).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
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

/// `pg_hba.conf` with every `trust` method replaced (peer on the socket,
/// scram-sha-256 over TCP), or `None` if none is left.
fn without_trust(hba: &str) -> Option<String> {
    let mut changed = false;
    let lines: Vec<String> = hba
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [kind, .., "trust"] if !kind.starts_with('#') => {
                    changed = true;
                    let method = if *kind == "local" {
                        "peer"
                    } else {
                        "scram-sha-256"
                    };
                    let keep = line.trim_end().strip_suffix("trust").unwrap_or(line);
                    format!("{keep}{method}")
                }
                _ => line.to_owned(),
            }
        })
        .collect();
    changed.then(|| lines.join("\n") + "\n")
}

/// A private redis-server, a child of this process.
pub struct PrivateRedis {
    child: Child,
    port: u16,
    password: String,
}

// By hand: the password stays out of logs.
impl std::fmt::Debug for PrivateRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateRedis")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PrivateRedis {
    /// Starts redis-server on loopback `port` with `password`, keeping
    /// its data under `DIR/redis`, and waits until it answers.
    pub async fn start(dir: &Path, port: u16, password: &str) -> anyhow::Result<Self> {
        let data = dir.join("redis");
        super::private::create_private_dir(&data)?;
        // The password goes in a config file (0600), not on the command
        // line that every user of the machine can read.
        let conf = data.join("redis.conf");
        super::private::write_private(&conf, format!("requirepass {password}\n").as_bytes())?;
        let bin = which("redis-server").context(
            "redis-server not found: install it (apt install redis-server) or set REDIS_URL",
        )?;
        let child = Command::new(bin)
            .arg(&conf)
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
        Ok(PrivateRedis {
            child,
            port,
            password: password.to_owned(),
        })
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/", self.password, self.port)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_is_replaced_and_comments_kept() {
        let hba = "# TYPE DATABASE USER ADDRESS METHOD\n\
                   # local all all trust\n\
                   local   all             all                                     trust\n\
                   host    all             all             127.0.0.1/32            trust\n\
                   host    replication     all             ::1/128                 scram-sha-256\n";
        let fixed = without_trust(hba).unwrap_or_default();
        assert!(fixed.contains("# local all all trust"), "{fixed}");
        assert!(
            fixed.contains("all                                     peer"),
            "{fixed}"
        );
        assert!(
            fixed.contains("127.0.0.1/32            scram-sha-256"),
            "{fixed}"
        );
        assert_eq!(without_trust(&fixed), None);
    }
}
