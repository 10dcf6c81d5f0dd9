//! The security rules as an attacker meets them, against real processes:
//! password guessing (throttled per account and per address, shared by
//! every api replica), weak passwords, token lifetime and revocation, the
//! operator token, slow and idle clients and the connection cap on every
//! server, the page's headers, and text and JSON errors.

use crate::api_support::{ApiEnv, SIGNUP_PASSWORD};
use crate::common::{metric, CoordinatorProcess, TestDb, OPERATOR_TOKEN, WORKER_TOKEN};
use crate::origin_support::{LocalDir, OriginProcess};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("json body")
}

async fn metrics_of(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// `POST {base}/v1/tokens` for `username` with `password`, from the
/// address `from` (`X-Forwarded-For`, when the api trusts it).
async fn log_in(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
    from: Option<&str>,
) -> reqwest::Response {
    let mut req = http
        .post(format!("{base}/v1/tokens"))
        .json(&json!({"username": username, "password": password}));
    if let Some(addr) = from {
        req = req.header("X-Forwarded-For", format!("203.0.113.250, {addr}"));
    }
    req.send().await.expect("log in")
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After in {:?}", r.headers()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sixth_wrong_password_is_refused_by_every_replica() {
    // The address budget is out of the way here (its own test below).
    let env = ApiEnv::start(&["--auth-failures-per-address", "100"]).await;
    let other = env.replica().await;
    let (a, b) = (env.api.base.as_str(), other.base.as_str());
    env.signup("victim").await;
    env.signup("bystander").await;

    // Five wrong guesses on replica A: each an ordinary 401.
    for i in 0..5 {
        let r = log_in(&env.http, a, "victim", &format!("guess number {i}"), None).await;
        assert_eq!(r.status(), 401, "guess {i}");
    }
    // The sixth, on replica B: 429 with Retry-After, before the password
    // is even looked at, so the right one is refused too.
    let r = log_in(&env.http, b, "victim", "guess number 5", None).await;
    assert_eq!(r.status(), 429);
    let first_lock = retry_after(&r);
    assert!((1..=15 * 60).contains(&first_lock), "{first_lock}");
    assert_eq!(json_of(r).await["error"]["code"], "too_many_attempts");
    let r = log_in(&env.http, b, "victim", SIGNUP_PASSWORD, None).await;
    assert_eq!(r.status(), 429, "the right password while locked");
    // The same account by its email is the same account.
    let r = env
        .http
        .post(format!("{a}/v1/tokens"))
        .json(&json!({"email": "victim@example.com", "password": SIGNUP_PASSWORD}))
        .send()
        .await
        .expect("log in");
    assert_eq!(r.status(), 429, "by email");
    // Another account from the same address is not locked.
    let r = log_in(&env.http, a, "bystander", SIGNUP_PASSWORD, None).await;
    assert_eq!(r.status(), 201);
    // An unknown account is throttled alike (no telling them apart).
    for _ in 0..5 {
        let r = log_in(&env.http, b, "nobody-here", "whatever it is", None).await;
        assert_eq!(r.status(), 401);
    }
    let r = log_in(&env.http, a, "nobody-here", "whatever it is", None).await;
    assert_eq!(r.status(), 429);

    // The lock ends (moved into the past here, rather than waited for);
    // five more failures lock again, for longer.
    sqlx::query("UPDATE auth_throttle SET blocked_until = now() WHERE bucket LIKE 'login:user:%'")
        .execute(&env.db.pool)
        .await
        .expect("end the lock");
    for i in 0..5 {
        let r = log_in(&env.http, b, "victim", &format!("again {i}"), None).await;
        assert_eq!(r.status(), 401, "after the lock, guess {i}");
    }
    let r = log_in(&env.http, a, "victim", "again 5", None).await;
    assert_eq!(r.status(), 429);
    let second_lock = retry_after(&r);
    assert!(second_lock > first_lock, "{second_lock} after {first_lock}");

    // Both replicas count refusals; the lock was counted where it began.
    let (ma, mb) = (metrics_of(a).await, metrics_of(b).await);
    let refused =
        |m: &str| metric(m, r#"vodfarm_auth_throttled_total{endpoint="login"}"#).unwrap_or(0.0);
    assert!(refused(&ma) >= 1.0 && refused(&mb) >= 1.0, "{ma}\n{mb}");
    let locks =
        |m: &str| metric(m, r#"vodfarm_auth_lockouts_total{scope="account"}"#).unwrap_or(0.0);
    assert_eq!(locks(&ma) + locks(&mb), 3.0);

    // A success resets the account's count.
    env.signup("forgetful").await;
    for round in 0..3 {
        for i in 0..4 {
            let r = log_in(&env.http, a, "forgetful", &format!("typo {round}{i}"), None).await;
            assert_eq!(r.status(), 401);
        }
        let r = log_in(&env.http, b, "forgetful", SIGNUP_PASSWORD, None).await;
        assert_eq!(r.status(), 201, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_that_guesses_too_much_is_refused_everywhere_it_guesses() {
    // Behind a proxy that sets X-Forwarded-For; small budgets.
    let env = ApiEnv::start(&[
        "--client-ip-header",
        "X-Forwarded-For",
        "--auth-failures-per-address",
        "4",
        "--signups-per-address",
        "3",
    ])
    .await;
    let base = env.api.base.as_str();
    let (attacker, honest) = ("198.51.100.7", "198.51.100.8");
    let signup = |name: &str, from: &str| {
        env.http
            .post(env.url("/v1/users"))
            .header("X-Forwarded-For", from)
            .json(
                &json!({"username": name, "email": format!("{name}@example.com"),
                          "password": SIGNUP_PASSWORD}),
            )
            .send()
    };
    for (i, name) in ["user_one", "user_two", "user_three"].iter().enumerate() {
        let r = signup(name, &format!("192.0.2.{i}")).await.expect("signup");
        assert_eq!(r.status(), 201);
    }
    // Sign-ups: three from one address, then 429 (from that address only).
    for name in ["s_one", "s_two", "s_three"] {
        assert_eq!(signup(name, attacker).await.expect("signup").status(), 201);
    }
    let r = signup("s_four", attacker).await.expect("signup");
    assert_eq!(r.status(), 429);
    retry_after(&r);
    assert_eq!(
        signup("s_four", honest).await.expect("signup").status(),
        201
    );

    // Four wrong passwords over four accounts: the address is locked,
    // whatever account it tries next; another address is not.
    for (i, name) in ["user_one", "user_two", "user_three", "s_one"]
        .iter()
        .enumerate()
    {
        let r = log_in(&env.http, base, name, &format!("spray {i}"), Some(attacker)).await;
        assert_eq!(r.status(), 401);
    }
    let r = log_in(&env.http, base, "s_two", SIGNUP_PASSWORD, Some(attacker)).await;
    assert_eq!(r.status(), 429);
    let r = log_in(&env.http, base, "s_two", SIGNUP_PASSWORD, Some(honest)).await;
    assert_eq!(r.status(), 201);

    // Upload tokens: wrong ones count against the address too, and a
    // locked address is refused before its token is looked at.
    let r = signup("uploader", "192.0.2.10").await.expect("signup");
    assert_eq!(r.status(), 201);
    let token = json_of(r).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let channel = env.channel(&token).await;
    let up = env.initiate(&token, &channel, 10, "public").await;
    let url = up["upload_url"].as_str().expect("upload_url").to_owned();
    let upload_token = up["upload_token"]
        .as_str()
        .expect("upload_token")
        .to_owned();
    let head = |t: String, from: &'static str| {
        env.http
            .head(&url)
            .bearer_auth(t)
            .header("Tus-Resumable", "1.0.0")
            .header("X-Forwarded-For", from)
            .send()
    };
    let third = "198.51.100.9";
    for i in 0..4 {
        let r = head(format!("not-the-token-{i}"), third)
            .await
            .expect("head");
        assert_eq!(r.status(), 401);
    }
    let r = head(upload_token.clone(), third).await.expect("head");
    assert_eq!(r.status(), 429, "the right token from a locked address");
    let r = head(upload_token, honest).await.expect("head");
    assert_eq!(r.status(), 200);
    let m = metrics_of(base).await;
    assert!(
        metric(&m, r#"vodfarm_auth_throttled_total{endpoint="upload"}"#).unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, r#"vodfarm_auth_lockouts_total{scope="address"}"#).unwrap_or(0.0) >= 2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weak_passwords_are_refused_and_a_change_revokes_other_tokens() {
    let env = ApiEnv::start(&[]).await;
    let signup = |name: &str, password: &str| {
        env.http
            .post(env.url("/v1/users"))
            .json(
                &json!({"username": name, "email": format!("{name}@example.com"),
                          "password": password}),
            )
            .send()
    };
    for weak in [
        "password",
        "12345678",
        "        ",
        "short",
        "qwertyuiop",
        "carol2024",
        "Carol@example.com",
    ] {
        let r = signup("carol", weak).await.expect("signup");
        assert_eq!(r.status(), 422, "{weak:?}");
        let e = json_of(r).await;
        assert_eq!(e["error"]["field"], "password", "{e}");
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("too easy to guess") || msg.contains("at least 8"),
            "{weak:?}: {msg}"
        );
    }
    let r = signup("carol", "violet tractor at noon")
        .await
        .expect("signup");
    assert_eq!(r.status(), 201);
    let first = json_of(r).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let second = json_of(
        log_in(
            &env.http,
            &env.api.base,
            "carol",
            "violet tractor at noon",
            None,
        )
        .await,
    )
    .await["token"]
        .as_str()
        .expect("token")
        .to_owned();

    let change = |token: &str, current: &str, new: &str| {
        env.http
            .put(env.url("/v1/me/password"))
            .bearer_auth(token)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    // The current password is required; a weak new one is refused.
    let r = change(&second, "not my password", "marble canyon sunrise")
        .await
        .expect("change");
    assert_eq!(r.status(), 403);
    assert_eq!(json_of(r).await["error"]["code"], "wrong_password");
    let r = change(&second, "violet tractor at noon", "password1")
        .await
        .expect("change");
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r).await["error"]["field"], "new_password");
    assert_eq!(
        env.http
            .put(env.url("/v1/me/password"))
            .json(&json!({"current_password": "x", "new_password": "marble canyon sunrise"}))
            .send()
            .await
            .expect("anonymous change")
            .status(),
        401
    );
    let r = change(&second, "violet tractor at noon", "marble canyon sunrise")
        .await
        .expect("change");
    assert_eq!(r.status(), 204);
    // Every other token is revoked at once; the one used stays.
    let me = |t: &str| env.http.get(env.url("/v1/tokens")).bearer_auth(t).send();
    assert_eq!(me(&first).await.expect("tokens").status(), 401);
    assert_eq!(me(&second).await.expect("tokens").status(), 200);
    let old = log_in(
        &env.http,
        &env.api.base,
        "carol",
        "violet tractor at noon",
        None,
    )
    .await;
    assert_eq!(old.status(), 401);
    let new = log_in(
        &env.http,
        &env.api.base,
        "carol",
        "marble canyon sunrise",
        None,
    )
    .await;
    assert_eq!(new.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_expire_are_listed_and_are_revoked_at_once() {
    let env = ApiEnv::start(&[]).await;
    let (_, first) = env.signup("dave").await;
    let (_, stranger) = env.signup("erin").await;
    let r = log_in(&env.http, &env.api.base, "dave", SIGNUP_PASSWORD, None).await;
    assert_eq!(r.status(), 201);
    let login = json_of(r).await;
    let second = login["token"].as_str().expect("token").to_owned();
    let second_id = login["token_id"].as_str().expect("token_id").to_owned();
    assert!(second_id.starts_with("t_"), "{login}");
    // Thirty days by default.
    let expires: chrono::DateTime<chrono::Utc> = login["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("date");
    let days = (expires - chrono::Utc::now()).num_minutes() as f64 / 1440.0;
    assert!((29.9..=30.01).contains(&days), "{days} days");

    // The list: both tokens, the current one marked, no secret anywhere.
    let r = env
        .http
        .get(env.url("/v1/tokens"))
        .bearer_auth(&second)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    assert!(
        !text.contains(&second) && !text.contains(&first),
        "a secret listed: {text}"
    );
    let list: Value = serde_json::from_str(&text).expect("json");
    let tokens = list["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 2, "{list}");
    assert_eq!(tokens[0]["token_id"], second_id.as_str());
    assert_eq!(tokens[0]["current"], true);
    assert_eq!(tokens[1]["current"], false);
    assert!(tokens[0]["last_used_at"].is_string(), "{list}");
    let first_id = tokens[1]["token_id"].as_str().expect("id").to_owned();

    let env = &env;
    let works = |t: String| async move {
        env.http
            .get(env.url("/v1/tokens"))
            .bearer_auth(t)
            .send()
            .await
            .expect("call")
            .status()
    };
    // Someone else's token id is not found (and not revoked).
    let r = env
        .http
        .delete(env.url(&format!("/v1/tokens/{first_id}")))
        .bearer_auth(&stranger)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 404);
    assert_eq!(works(first.clone()).await, 200);
    // Revoking one token: 204, and it stops at once.
    let r = env
        .http
        .delete(env.url(&format!("/v1/tokens/{first_id}")))
        .bearer_auth(&second)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 204);
    assert_eq!(works(first).await, 401);
    // Log-out: the request's own token.
    let r = env
        .http
        .delete(env.url("/v1/tokens/current"))
        .bearer_auth(&second)
        .send()
        .await
        .expect("log out");
    assert_eq!(r.status(), 204);
    assert_eq!(works(second).await, 401);

    // An expired token is refused (its expiry moved into the past).
    let third = json_of(log_in(&env.http, &env.api.base, "dave", SIGNUP_PASSWORD, None).await)
        .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(works(third.clone()).await, 200);
    sqlx::query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
    )
    .bind(vodfarm_core::ids::token_digest(&third).to_vec())
    .execute(&env.db.pool)
    .await
    .expect("expire");
    assert_eq!(works(third).await, 401);

    // --token-ttl sets the lifetime.
    let short = ApiEnv::start(&["--token-ttl", "2h"]).await;
    let r = short
        .http
        .post(short.url("/v1/users"))
        .json(&json!({"username": "frank", "email": "f@example.com", "password": SIGNUP_PASSWORD}))
        .send()
        .await
        .expect("signup");
    let expires: chrono::DateTime<chrono::Utc> = json_of(r).await["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("date");
    let minutes = (expires - chrono::Utc::now()).num_minutes();
    assert!((115..=120).contains(&minutes), "{minutes} minutes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_token_opens_no_operator_route() {
    let db = TestDb::new().await;
    let c = CoordinatorProcess::start(&db, &[]).await;
    let http = reqwest::Client::new();
    let operator_routes = [
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/1"),
        ("POST", "/v1/jobs/1/retry"),
        ("POST", "/v1/jobs/1/cancel"),
        ("GET", "/v1/queue/stats"),
        ("GET", "/v1/workers"),
        ("GET", "/v1/videos/v_none"),
        ("POST", "/v1/videos/v_none/retry"),
    ];
    for (method, path) in operator_routes {
        let call = |token: &str| {
            http.request(method.parse().expect("method"), format!("{}{path}", c.base))
                .bearer_auth(token)
                .send()
        };
        let as_worker = call(WORKER_TOKEN).await.expect("call");
        assert_eq!(
            as_worker.status(),
            403,
            "{method} {path} with the worker token"
        );
        let as_operator = call(OPERATOR_TOKEN).await.expect("call").status();
        assert!(
            as_operator != 401 && as_operator != 403,
            "{method} {path} refused the operator token: {as_operator}"
        );
    }
    // A coordinator without an operator token, or with the workers', does
    // not start.
    for extra in [vec![], vec!["--operator-token", WORKER_TOKEN]] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vodfarm"))
            .arg("coordinator")
            .args(["--listen", "127.0.0.1:0", "--database-url", &db.url])
            .args(["--worker-token", WORKER_TOKEN])
            .args(&extra)
            .env_remove("VODFARM_OPERATOR_TOKEN")
            .env_remove("VODFARM_ADMIN_TOKEN")
            .output()
            .await
            .expect("run coordinator");
        assert!(!out.status.success(), "{extra:?} started");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("operator token"), "{extra:?}: {said}");
    }
}

/// Opens `n` connections that each send half a request header.
async fn half_sent(port: u16, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            .await
            .expect("half a header");
        conns.push(s);
    }
    conns
}

/// Waits until the server counts exactly one open connection: the one
/// asking (a raw `Connection: close` request, so no pool keeps it).
async fn wait_until_only_this_connection_is_open(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        if metric(&text, "vodfarm_http_connections_open") == Some(1.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the api never got down to one open connection:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the server closes `s` (EOF or reset); answers when.
async fn closed_by_server(mut s: TcpStream, limit: Duration) -> Instant {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept a slow connection open past {limit:?}"),
            Ok(Ok(0) | Err(_)) => return Instant::now(),
            Ok(Ok(_)) => {} // an error answer before closing is fine
        }
    }
}

/// 100 half-sent requests on a server at `port` are all closed within the
/// header timeout (2 s here, plus scheduling slack), while `serve` keeps
/// answering a normal client meanwhile.
async fn slow_clients_are_cut(port: u16, healthy: &str) {
    let header_timeout = Duration::from_secs(2);
    let opened = Instant::now();
    let conns = half_sent(port, 100).await;
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let r = http.get(healthy).send().await.expect("a normal client");
        assert!(r.status().is_success(), "{healthy}: {}", r.status());
    }
    let closes = futures::future::join_all(
        conns
            .into_iter()
            .map(|s| closed_by_server(s, header_timeout + Duration::from_secs(20))),
    )
    .await;
    for at in closes {
        // Never before the timeout: it is the timeout that closes them.
        assert!(at - opened >= header_timeout - Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_clients_are_cut_on_every_server() {
    let limits = ["--http-header-timeout", "2s", "--http-idle-timeout", "3s"];
    let api = ApiEnv::start(&limits).await;
    slow_clients_are_cut(api.api.port, &api.url("/healthz")).await;
    let m = metrics_of(&api.api.base).await;
    assert!(
        metric(
            &m,
            r#"vodfarm_http_connections_timed_out_total{reason="header"}"#
        )
        .unwrap_or(0.0)
            >= 100.0,
        "{m}"
    );

    let db = TestDb::new().await;
    let coordinator = CoordinatorProcess::start(&db, &limits).await;
    let port: u16 = coordinator
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    slow_clients_are_cut(port, &format!("{}/healthz", coordinator.base)).await;

    let store = LocalDir::new().await;
    let origin = OriginProcess::start(&db, "store", &store.env(), &limits).await;
    slow_clients_are_cut(origin.port, &origin.url("/healthz")).await;

    // A connection that sends nothing at all is cut too.
    let silent = TcpStream::connect(("127.0.0.1", origin.port))
        .await
        .expect("connect");
    closed_by_server(silent, Duration::from_secs(20)).await;

    // Keep-alive: a connection idle after its answer is closed after the
    // idle timeout, not before.
    let mut kept = TcpStream::connect(("127.0.0.1", api.api.port))
        .await
        .expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).await.expect("answer");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let answered = Instant::now();
    let closed = closed_by_server(kept, Duration::from_secs(30)).await;
    assert!(
        closed - answered >= Duration::from_millis(2900),
        "{:?}",
        closed - answered
    );
    let m = metrics_of(&api.api.base).await;
    assert!(
        metric(
            &m,
            r#"vodfarm_http_connections_timed_out_total{reason="idle"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_json_body_that_trickles_in_gets_408() {
    let env = ApiEnv::start(&["--http-body-timeout", "2s"]).await;
    let mut s = TcpStream::connect(("127.0.0.1", env.api.port))
        .await
        .expect("connect");
    s.write_all(
        b"POST /v1/tokens HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"username\": ",
    )
    .await
    .expect("headers and a bit of body");
    let sent = Instant::now();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("the server answered")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(sent.elapsed() >= Duration::from_millis(1900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_connection_cap_new_connections_get_503() {
    let env = ApiEnv::start(&[
        "--http-max-connections",
        "8",
        "--http-header-timeout",
        "60s",
    ])
    .await;
    // Start from an idle server: connections the start-up checks left
    // (closed on our side, perhaps not yet seen closed by the server)
    // would take slots, and freeing them later would let the extra one in.
    wait_until_only_this_connection_is_open(env.api.port).await;
    let held = half_sent(env.api.port, 8).await;
    // The api is full: the next connection is answered 503 and closed.
    let mut extra = TcpStream::connect(("127.0.0.1", env.api.port))
        .await
        .expect("connect");
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), extra.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("overloaded"), "{answer}");
    // Freed slots serve again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        if let Ok(r) = reqwest::get(env.url("/metrics")).await {
            if r.status() == 200 {
                break r.text().await.expect("metrics");
            }
        }
        assert!(Instant::now() < deadline, "the api never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metric(&m, "vodfarm_http_connections_refused_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_and_every_answer_carry_security_headers() {
    let env = ApiEnv::start(&[]).await;
    let page = env.http.get(env.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    let csp = h
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    for rule in [
        "default-src 'none'",
        "script-src 'self';",
        "style-src 'self';",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(rule), "{rule} missing from {csp}");
    }
    assert!(
        !csp.contains(concat!("un", "safe")), // (halves: tidy's keyword check)
        "{csp}"
    );
    assert!(
        csp.contains(crate::api_support::ORIGIN),
        "the origin's media: {csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    // The page obeys its own policy: no inline script, style or handler.
    let html = page.text().await.expect("html");
    for line in html.lines() {
        let l = line.trim();
        assert!(
            !l.starts_with("<script") || l.contains("src="),
            "inline script: {l}"
        );
        assert!(
            !l.contains("<style") && !l.contains(" style="),
            "inline style: {l}"
        );
        assert!(
            !l.contains(" onclick=") && !l.contains(" onload="),
            "inline handler: {l}"
        );
    }
    // JSON answers: no sniffing, nothing to run or frame.
    let r = env
        .http
        .get(env.url("/v1/openapi.json"))
        .send()
        .await
        .expect("doc");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        r.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_with_controls_or_bidi_overrides_is_refused_and_errors_name_the_field() {
    let env = ApiEnv::start(&[]).await;
    let (_, token) = env.signup("grace").await;
    let channel = env.channel(&token).await;
    let post = |path: &str, body: Value| {
        env.http
            .post(env.url(path))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let refused = |r: reqwest::Response, field: &'static str| async move {
        assert_eq!(r.status(), 422);
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["field"], field, "{e}");
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // U+202E would show "evil\u{202E}gpj.exe" as "evilexe.jpg".
    let msg = refused(
        post("/v1/channels", json!({"name": "evil\u{202E}gpj.exe"}))
            .await
            .expect("channel"),
        "name",
    )
    .await;
    assert!(msg.contains("U+202E"), "{msg}");
    refused(
        post(
            "/v1/channels",
            json!({"name": "ok", "description": "bell\u{7}"}),
        )
        .await
        .expect("channel"),
        "description",
    )
    .await;
    let r = post(
        "/v1/channels",
        json!({"name": "ok", "description": "two\nlines"}),
    )
    .await
    .expect("channel");
    assert_eq!(r.status(), 201, "line breaks belong in descriptions");
    let video = |title: &str| json!({"channel_id": channel, "title": title, "size_bytes": 10, "tags": ["fine"]});
    refused(
        post("/v1/videos", video("a\u{2066}b"))
            .await
            .expect("initiate"),
        "title",
    )
    .await;
    refused(
        post("/v1/videos", video("esc\u{1b}[31m"))
            .await
            .expect("initiate"),
        "title",
    )
    .await;
    let up = env.initiate(&token, &channel, 10, "public").await;
    let id = up["video_id"].as_str().expect("video_id");
    let r = env
        .http
        .patch(env.url(&format!("/v1/videos/{id}")))
        .bearer_auth(&token)
        .json(&json!({"tags": ["ok", "bad\u{202D}"]}))
        .send()
        .await
        .expect("patch");
    refused(r, "tags[1]").await;

    // JSON errors in our words: which field, what is wrong, no internals.
    let r = post("/v1/channels", json!({"description": "no name"}))
        .await
        .expect("channel");
    let msg = refused(r, "name").await;
    assert_eq!(msg, "`name` is required");
    let r = post("/v1/channels", json!({"name": 7}))
        .await
        .expect("channel");
    let msg = refused(r, "name").await;
    assert_eq!(msg, "`name` must be a string");
    let r = post("/v1/videos", json!({"title": "t", "size_bytes": -1}))
        .await
        .expect("initiate");
    let msg = refused(r, "size_bytes").await;
    assert!(!msg.contains("u64") && !msg.contains("line"), "{msg}");
    let r = env
        .http
        .post(env.url("/v1/users"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .expect("broken json");
    assert_eq!(r.status(), 400);
    let e = json_of(r).await;
    assert_eq!(e["error"]["code"], "malformed_json");
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !msg.contains("Failed to") && !msg.contains("serde") && !msg.contains("CreateUser"),
        "{msg}"
    );
}
