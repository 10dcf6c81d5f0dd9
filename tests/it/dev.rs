//! `vodfarm dev` as a newcomer runs it: one process on embedded defaults
//! (private PostgreSQL cluster, private redis-server, a local object
//! directory), a demo video uploaded through tus, transcoded and served;
//! then the web page checked in headless Debian chromium; then a clean
//! stop and a second run that reuses the data.

use crate::common;

use common::free_port;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Every stderr line (the logs), for the console checks.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Dev {
    fn start(dir: &Path, ports: &[u16; 12]) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("dev")
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--pg-port",
                &ports[0].to_string(),
                "--redis-port",
                &ports[1].to_string(),
            ])
            .args([
                "--coordinator-port",
                &ports[2].to_string(),
                "--api-port",
                &ports[3].to_string(),
            ])
            .args([
                "--origin-port",
                &ports[4].to_string(),
                "--shield-port",
                &ports[5].to_string(),
            ])
            .args(["--worker-port", &ports[6].to_string()])
            .args(["--purger-port", &ports[7].to_string()])
            .args(["--search-indexer-port", &ports[8].to_string()])
            .args(["--webhooks-port", &ports[9].to_string()])
            .args(["--counts-port", &ports[10].to_string()])
            .args(["--recs-port", &ports[11].to_string()])
            // Embedded defaults: nothing configured from outside.
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("VODFARM_STORE")
            // Info, so the console checks see what an operator sees.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vodfarm dev");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                eprintln!("dev! {line}");
                sink.lock().expect("stderr lines").push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("dev> {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for a stdout line starting with `prefix` (trimmed).
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .seen
                .iter()
                .find(|l| l.trim_start().starts_with(prefix))
            {
                return l.trim().to_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("vodfarm dev never printed {prefix:?}; saw {:#?}", self.seen),
            }
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        common::terminate_child(&mut self.child, Duration::from_secs(60))
            .expect("vodfarm dev did not stop after SIGTERM")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_file(path: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .expect("dev.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn artifacts_dir() -> PathBuf {
    // Screenshots are kept as test artifacts beside the build.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artifacts").join("browser")
}

fn stop_private_postgres(dir: &Path) {
    // The test's own cleanup if dev failed to stop its cluster.
    let data = dir.join("postgres");
    if data.join("postmaster.pid").exists() {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "/usr/lib/postgresql/15/bin/pg_ctl",
                "-D",
            ])
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .status();
    }
}

#[test]
fn dev_runs_everything_and_the_page_plays_and_uploads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let ports: [u16; 12] = std::array::from_fn(|_| free_port());
    let mut dev = Dev::start(&dir, &ports);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let page = dev.wait_line("open the page:", Duration::from_secs(600));
        let master = dev.wait_line("demo playlist:", Duration::from_secs(5));
        let page = page.rsplit(' ').next().unwrap().to_owned();
        let master = master.rsplit(' ').next().unwrap().to_owned();
        assert_eq!(page, format!("http://127.0.0.1:{}/", ports[3]));
        assert!(
            master.starts_with(&format!("http://127.0.0.1:{}/v/", ports[5])),
            "{master}"
        );

        // dev.env tells the user (and `vodfarm upload`) where everything is.
        let env = env_file(&dir.join("dev.env"));
        for key in [
            "VODFARM_API",
            "VODFARM_ORIGIN",
            "VODFARM_TOKEN",
            "VODFARM_CHANNEL",
            "DATABASE_URL",
        ] {
            assert!(
                env.get(key).is_some_and(|v| !v.is_empty()),
                "dev.env lacks {key}: {env:?}"
            );
        }
        assert!(
            env["DATABASE_URL"].contains(&ports[0].to_string()),
            "private PostgreSQL used"
        );
        assert!(dir.join("postgres/PG_VERSION").exists());

        // Dev's data is its owner's: the directory (traversable only, when
        // root runs PostgreSQL as `postgres`), the store, secrets, logs.
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                .unwrap_or(0)
        };
        assert!(matches!(mode(&dir), 0o700 | 0o711), "{:o}", mode(&dir));
        for (name, want) in [
            ("store", 0o700),
            ("scratch", 0o700),
            ("redis", 0o700),
            ("postgres", 0o700),
            ("secrets.env", 0o600),
            ("dev.env", 0o600),
            ("access.log", 0o600),
        ] {
            assert_eq!(
                mode(&dir.join(name)),
                want,
                "{name} is {:o}",
                mode(&dir.join(name))
            );
        }
        let checks = tokio::runtime::Runtime::new().expect("runtime");
        checks.block_on(async {
            // The private PostgreSQL wants the password dev.env carries.
            let without = format!("postgres://postgres@127.0.0.1:{}/postgres", ports[0]);
            assert!(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&without)
                    .await
                    .is_err(),
                "the private PostgreSQL let a client in without a password"
            );
            let with = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&env["DATABASE_URL"])
                .await
                .expect("dev.env's DATABASE_URL works");
            with.close().await;
            // Dev routes answer only a loopback Host: a rebound name is refused.
            let status = |host: String, origin: &'static str| async move {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", ports[3]))
                    .await
                    .expect("connect");
                let req = format!(
                    "GET /v1/dev/session HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: close\r\n\r\n"
                );
                tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
                    .await
                    .expect("send");
                let mut answer = String::new();
                tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answer)
                    .await
                    .expect("answer");
                // Never readable by another site's script.
                assert!(
                    !answer.to_ascii_lowercase().contains("access-control-allow-origin"),
                    "{answer}"
                );
                answer.split(' ').nth(1).unwrap_or_default().to_owned()
            };
            let here = format!("127.0.0.1:{}", ports[3]);
            assert_eq!(status(format!("evil.example:{}", ports[3]), "").await, "403");
            assert_eq!(status(here.clone(), "").await, "200");
            assert_eq!(status(format!("localhost:{}", ports[3]), "").await, "200");
            // A page of another site calling the real address is refused.
            assert_eq!(status(here.clone(), "Origin: https://evil.example\r\n").await, "403");
            assert_eq!(status(here, "Origin: http://localhost:1\r\n").await, "200");
        });

        // The demo plays to the end through the shield, 30 s long.
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
                &master,
            ])
            .output()
            .expect("ffprobe");
        let secs: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0.0);
        assert!((secs - 30.0).abs() < 0.2, "demo duration {secs}");
        let play = Command::new("ffmpeg")
            .args(["-v", "error", "-xerror", "-i", &master, "-f", "null", "-"])
            .output()
            .expect("ffmpeg");
        assert!(
            play.status.success() && play.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&play.stderr)
        );

        // The page, in headless chromium.
        let clip = tmp.path().join("clip.mp4");
        let made = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25:duration=2",
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                "sine=duration=2",
                "-c:v",
                "libx264",
                "-c:a",
                "aac",
                "-shortest",
            ])
            .arg(&clip)
            .status()
            .expect("ffmpeg");
        assert!(made.success());
        let shots = artifacts_dir();
        let browser = Command::new("node")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/web"))
            // The demo source is 1080p: the page must offer the whole ladder.
            .env("EXPECT_RUNGS", "240p,720p,1080p")
            .arg("tests/browser.mjs")
            .arg(&page)
            .arg(&shots)
            .arg(&clip)
            .output()
            .expect("node (install Node.js and run `npm ci` in web/)");
        let report = String::from_utf8_lossy(&browser.stdout);
        println!("{report}{}", String::from_utf8_lossy(&browser.stderr));
        assert!(browser.status.success(), "browser checks failed:\n{report}");
        // The console tells the story: no colour codes when not a terminal,
        // and the per-request access lines (ffmpeg and the page just made
        // hundreds) are in DIR/access.log, not on the console.
        let logs = dev.stderr.lock().expect("stderr lines").clone();
        assert!(logs.len() > 3, "dev logged almost nothing: {logs:#?}");
        for line in dev.seen.iter().chain(&logs) {
            assert!(!line.contains('\x1b'), "ANSI escape on a pipe: {line:?}");
            assert!(
                !line.contains("micros="),
                "an access line reached the console: {line}"
            );
        }
        let access = std::fs::read_to_string(dir.join("access.log")).expect("DIR/access.log");
        assert!(
            access.lines().filter(|l| l.contains("/segment_")).count() >= 3,
            "access.log lacks segment requests:\n{access}"
        );
        assert!(!access.contains('\x1b'), "ANSI escape in access.log");
        for shot in [
            "01-page",
            "02-playing",
            "03-qualities",
            "04-preview",
            "05-uploaded",
            "06-search",
        ] {
            assert!(
                shots.join(format!("{shot}.png")).exists(),
                "screenshot {shot}"
            );
        }

        // The upload made through the page is processed like any other.
        let uploaded =
            std::fs::read_to_string(shots.join("uploaded-video-id.txt")).expect("uploaded id");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let v: serde_json::Value = http
                    .get(format!("{page}v1/videos/{uploaded}"))
                    .bearer_auth(&env["VODFARM_TOKEN"])
                    .send()
                    .await
                    .expect("video")
                    .json()
                    .await
                    .expect("video json");
                if v["status"] == "ready" {
                    break;
                }
                assert_ne!(v["status"], "failed", "{v}");
                assert!(
                    Instant::now() < deadline,
                    "browser upload never became ready: {v}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        // The page uploaded it as CMAF: it plays over DASH with dash.js
        // in chromium, and its captions show.
        let dash = Command::new("node")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/web"))
            .arg("tests/dash.mjs")
            .arg(&page)
            .arg(&shots)
            .arg(uploaded.trim())
            .output()
            .expect("node");
        let report = String::from_utf8_lossy(&dash.stdout);
        println!("{report}{}", String::from_utf8_lossy(&dash.stderr));
        assert!(
            dash.status.success(),
            "DASH browser checks failed:\n{report}"
        );
        assert!(shots.join("06-dash-captions.png").exists());
    }));
    let status = dev.terminate();
    if let Err(panic) = result {
        stop_private_postgres(&dir);
        std::panic::resume_unwind(panic);
    }
    assert!(
        status.success(),
        "vodfarm dev exited with {status:?} after SIGTERM"
    );
    assert!(
        !dir.join("postgres/postmaster.pid").exists(),
        "private PostgreSQL stopped"
    );

    // A second run reuses the data: no new demo upload.
    let mut again = Dev::start(&dir, &ports);
    let reused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        again.wait_line("demo video", Duration::from_secs(120));
        again.wait_line("open the page:", Duration::from_secs(60));
        assert!(
            again.seen.iter().any(|l| l.contains("is already uploaded")),
            "second run uploaded again: {:#?}",
            again.seen
        );
    }));
    let status = again.terminate();
    stop_private_postgres(&dir);
    if let Err(panic) = reused {
        std::panic::resume_unwind(panic);
    }
    assert!(status.success());
}
