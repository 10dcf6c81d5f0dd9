//! Test support shared by the crates' tests and benches: a real
//! S3-protocol server (`s3s-fs`) on a free port.
//!
//! `.ci/run` installs `s3s-fs` (`cargo install s3s-fs --features binary`);
//! set `S3S_FS_BIN` to use another path.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key of the test server.
pub const ACCESS_KEY: &str = "vodfarm-test-access";
/// Secret key of the test server.
pub const SECRET_KEY: &str = "vodfarm-test-secret-key";

/// A running `s3s-fs`, killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS_BIN") {
        return p.into();
    }
    let home_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|d| d.join("bin/s3s-fs"));
    match home_bin {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("s3s-fs"),
    }
}

impl S3Server {
    /// Starts a server over a fresh temporary directory and waits until it
    /// accepts connections. Panics (this is test support) if it cannot.
    pub async fn start() -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir =
            std::env::temp_dir().join(format!("vodfarm-s3-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("s3 dir");
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs (install it: cargo install s3s-fs --version 0.14.1 --features binary)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        S3Server {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A client for this server (static credentials, path-style).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "vodfarm-test",
        );
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The environment a child process needs to reach this server through
    /// the SDK's own variables (`VODFARM_STORE=s3://BUCKET` plus these).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
