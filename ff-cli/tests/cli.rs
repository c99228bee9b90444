//! `ff` end to end: the real binary against the example app (its real router,
//! Source and SQLite store) on a loopback port.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ff_store::{Source, SqlStore};
use serde_json::{Value, json};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ff(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args(args)
        .env_remove("FF_URL")
        .env_remove("FF_TOKEN")
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .output()
        .expect("run ff");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The row of a table whose first cell is `first`, split on whitespace.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r.first() == Some(&first))
        .unwrap_or_default()
}

async fn config(base: &str, user: &str) -> Value {
    let res = reqwest::Client::new().get(format!("{base}/me/config")).header("x-user-id", user).send().await;
    res.unwrap().json().await.unwrap()
}

async fn wait_for(base: &str, user: &str, key: &str, value: Value) {
    let start = Instant::now();
    while config(base, user).await[key] != value {
        assert!(start.elapsed() < Duration::from_secs(10), "{user} never saw {key}={value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pay(base: &str) -> u16 {
    let res = reqwest::Client::new()
        .post(format!("{base}/payments"))
        .json(&json!({"amount_cents": 100, "method": "credits"}))
        .send()
        .await
        .unwrap();
    res.status().as_u16()
}

/// `ff ARGS` with `FF_URL` and `FF_TOKEN`, off the async runtime.
fn run_as(url: &str, token: &str, args: &[&str]) -> tokio::task::JoinHandle<Run> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (url, token) = (url.to_owned(), token.to_owned());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ff(&args, &[("FF_URL", &url), ("FF_TOKEN", &token)])
    })
}

/// The example's router and Source on a loopback port, over a fresh SQLite file.
struct Example {
    base: String,
    db: String,
    _dir: tempfile::TempDir,
}

async fn start_example() -> Example {
    start_example_with(|admin| admin).await
}

/// [`start_example`] with the admin as `admin` makes it.
async fn start_example_with(admin: impl FnOnce(ff_admin::Admin) -> ff_admin::Admin) -> Example {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let store = Arc::new(SqlStore::connect_lazy(&db).unwrap());
    let source = Source::builder_arc(store.clone()).poll_interval(Duration::from_millis(50)).start().await;
    let admin = admin(ff_admin::Admin::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, ff_axum_example::make_service(source, admin)).await });
    Example { base, db, _dir: dir }
}

/// `ff token create` straight into the database: the first admin token.
async fn first_token(db: &str) -> String {
    let db = db.to_owned();
    let created = tokio::task::spawn_blocking(move || {
        ff(&["token", "create", "--name", "root", "--role", "admin"], &[("DATABASE_URL", &db)])
    })
    .await
    .unwrap();
    assert_eq!(created.code, 0, "{}", created.stderr);
    let token = created.stdout.trim().to_owned();
    assert!(token.starts_with("ff_"), "{token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operate_the_example_from_the_terminal() {
    let example = start_example().await;
    let (base, token) = (example.base.clone(), first_token(&example.db).await);
    let url = format!("{base}/admin");
    let run = |args: &[&str]| run_as(&url, &token, args);

    let flags = run(&["flags"]).await.unwrap();
    assert_eq!(flags.code, 0, "{}", flags.stderr);
    assert!(flags.stdout.starts_with("KEY"));
    assert_eq!(
        row(&flags.stdout, "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING")[1..],
        ["string", "24h", "on", "0", "1"]
    );

    let set =
        run(&["override", "set", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", "tester", "0s", "--reason", "QA"]);
    assert_eq!(set.await.unwrap().code, 0);
    wait_for(&base, "tester", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", json!("0s")).await;
    assert_eq!(config(&base, "alice").await["MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"], "24h");
    let user = run(&["user", "tester"]).await.unwrap();
    assert_eq!(row(&user.stdout, "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING")[1..], ["0s", "override"]);
    let get = run(&["get", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"]).await.unwrap();
    assert_eq!(get.code, 0, "{}", get.stderr);
    assert!(
        get.stdout.contains("switch       on") && get.stdout.contains("overrides    1"),
        "{}",
        get.stdout
    );
    assert_eq!(row(&get.stdout, "tester")[1..], ["0s"], "{}", get.stdout);

    let off = run(&["off", "CREDITS_PAYMENTS", "--reason", "incident"]).await.unwrap();
    assert_eq!(off.code, 0, "{}", off.stderr);
    wait_for(&base, "alice", "CREDITS_PAYMENTS", json!(false)).await;
    assert_eq!(pay(&base).await, 503);

    let history = run(&["history", "--json", "--limit", "1"]).await.unwrap();
    let last: Value = serde_json::from_str(&history.stdout).unwrap();
    let change = &last["changes"][0];
    assert_eq!((change["actor"].clone(), change["reason"].clone()), (json!("root"), json!("incident")));
    let table = run(&["history", "CREDITS_PAYMENTS"]).await.unwrap();
    assert!(
        table.stdout.contains("flag.update") && table.stdout.contains("true -> true (off)"),
        "{}",
        table.stdout
    );
    let seq = change["seq"].to_string();
    // What the server sends back cannot drive the terminal or forge a line.
    let hostile = "\u{1b}[2J\nflag.update forged\u{202e}";
    let user =
        run(&["override", "set", "NEW_CHECKOUT", "mallory", "true", "--reason", hostile]).await.unwrap();
    assert_eq!(user.code, 0, "{}", user.stderr);
    let table = run(&["history", "NEW_CHECKOUT", "--limit", "1"]).await.unwrap();
    assert!(!table.stdout.contains('\u{1b}') && !table.stdout.contains('\u{202e}'), "{:?}", table.stdout);
    assert!(table.stdout.contains("\\u{1b}[2J\\nflag.update forged\\u{202e}"), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), 2, "a header and one row: {}", table.stdout);
    assert_eq!(run(&["override", "rm", "NEW_CHECKOUT", "mallory"]).await.unwrap().code, 0);
    assert_eq!(run(&["revert", &seq]).await.unwrap().code, 0);
    wait_for(&base, "alice", "CREDITS_PAYMENTS", json!(true)).await;
    assert_eq!(pay(&base).await, 201);

    let set = run(&["set", "NEW_CHECKOUT", "true"]).await.unwrap();
    assert_eq!(set.code, 0, "{}", set.stderr);
    wait_for(&base, "alice", "NEW_CHECKOUT", json!(true)).await;

    // Failures: non-zero exit, one line that says why, nothing written.
    for (args, says) in [
        (&["set", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", "-5"][..], "422 invalid_value"),
        (
            &["set", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", "2 days"][..],
            "is not a duration like 90m, 48h or 1h30m",
        ),
        (&["get", "NOPE"][..], "404 not_found"),
        (&["override", "set", "CAPTIONER_HOURLY_RATE_MIN", "tester", "cheap"][..], "expected a float"),
        (&["revert", "99999"][..], "404"),
        // The settings' rule (declared on the example's config struct): min <= max.
        (
            &["set", "CAPTIONER_HOURLY_RATE_MIN", "600"][..],
            "422 rule_broken: rule CAPTIONER_HOURLY_RATE_MIN <= CAPTIONER_HOURLY_RATE_MAX would be broken",
        ),
        (&["override", "set", "CAPTIONER_HOURLY_RATE_MAX", "alice", "10"][..], "for user \"alice\""),
    ] {
        let out = run(args).await.unwrap();
        assert_eq!(out.code, 1, "{args:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("ff: ") && out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    assert_eq!(config(&base, "alice").await["MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"], "24h");
    assert_eq!(config(&base, "alice").await["CAPTIONER_HOURLY_RATE_MAX"], 500.0);
    let no_token = tokio::task::spawn_blocking({
        let url = url.clone();
        move || ff(&["flags"], &[("FF_URL", &url)])
    })
    .await
    .unwrap();
    assert_eq!(no_token.code, 1);
    assert!(no_token.stderr.contains("no token"), "{}", no_token.stderr);
    let unreachable = tokio::task::spawn_blocking(|| {
        ff(&["flags", "--url", "http://127.0.0.1:9/admin", "--token", "x"], &[])
    });
    let unreachable = unreachable.await.unwrap();
    assert_eq!(unreachable.code, 1);
    assert!(unreachable.stderr.contains("cannot reach"), "{}", unreachable.stderr);

    // Tokens through the API.
    let bot = run(&["token", "create", "--name", "bot", "--role", "viewer"]).await.unwrap();
    assert_eq!(bot.code, 0, "{}", bot.stderr);
    assert_eq!(row(&run(&["token", "list"]).await.unwrap().stdout, "bot")[1], "viewer");
    assert_eq!(run(&["token", "revoke", "bot"]).await.unwrap().code, 0);
    let get = run(&["get", "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"]).await.unwrap();
    assert_eq!(row(&get.stdout, "bounds")[1..], ["max", "8760h"]);
    assert_eq!(row(&get.stdout, "tester"), ["tester", "0s"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_round_trip() {
    let example = start_example().await;
    let (base, token) = (example.base.clone(), first_token(&example.db).await);
    let url = format!("{base}/admin");
    let run = |args: &[&str]| run_as(&url, &token, args);
    let exported = run(&["export"]).await.unwrap();
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    assert!(exported.stdout.starts_with("# ff export"));
    let mut doc: Value = serde_yaml_ng::from_str(&exported.stdout).unwrap();
    assert_eq!(doc["flags"].as_array().unwrap().len(), 7);

    // What an operator edits in the file.
    let flags = doc["flags"].as_array_mut().unwrap();
    let find = |flags: &mut Vec<Value>, key: &str| flags.iter().position(|f| f["key"] == key).unwrap();
    let i = find(flags, "NEW_CHECKOUT");
    flags[i]["value"] = json!(true);
    flags[i]["approval"] = json!(true);
    let i = find(flags, "CREDITS_PAYMENTS");
    flags[i]["enabled"] = json!(false);
    let i = find(flags, "CAPTIONER_HOURLY_RATE_MIN");
    flags[i]["overrides"] = json!({"tester": 1});
    flags[i]["value"] = json!(60); // an integer for a float flag: the same value, no change
    let i = find(flags, "EXTERNAL_CALENDAR_INTEGRATION");
    flags[i]["targeting"] = json!({"rules": [{"clauses": [{"attribute": "user_id", "op": "in", "values": ["vip"]}], "value": true}]});
    flags.push(json!({"key": "BANNER", "type": "string", "value": "hello", "owner": "web", "overrides": {"vip": "hi"}}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flags.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let file = file.to_str().unwrap();

    let dry = run(&["import", file, "--dry-run"]).await.unwrap();
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let lines: Vec<&str> = dry.stdout.lines().collect();
    assert!(lines.contains(&"~ NEW_CHECKOUT value: false -> true"), "{}", dry.stdout);
    assert!(lines.contains(&"~ NEW_CHECKOUT approval: null -> true"), "{}", dry.stdout);
    assert!(lines.contains(&"~ CREDITS_PAYMENTS enabled: true -> false"), "{}", dry.stdout);
    assert!(lines.contains(&"+ CAPTIONER_HOURLY_RATE_MIN override tester = 1"), "{}", dry.stdout);
    assert!(lines.contains(&"+ create BANNER (string) = \"hello\""), "{}", dry.stdout);
    assert!(lines.contains(&"+ BANNER override vip = \"hi\""), "{}", dry.stdout);
    assert!(
        lines.iter().any(|l| l.starts_with("~ EXTERNAL_CALENDAR_INTEGRATION targeting:")),
        "{}",
        dry.stdout
    );
    assert_eq!(lines.last(), Some(&"6 change(s) (dry run: nothing written)"));
    assert_eq!(config(&base, "alice").await["NEW_CHECKOUT"], false);

    let applied = run(&["import", file]).await.unwrap();
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(applied.stdout.ends_with("6 change(s) applied\n"), "{}", applied.stdout);
    let vip = run(&["user", "vip"]).await.unwrap();
    assert_eq!(
        row(&vip.stdout, "EXTERNAL_CALENDAR_INTEGRATION")[1..],
        ["true", "rule", "0"],
        "{}",
        vip.stdout
    );
    wait_for(&base, "alice", "NEW_CHECKOUT", json!(true)).await;
    wait_for(&base, "tester", "CAPTIONER_HOURLY_RATE_MIN", json!(1.0)).await;
    assert_eq!(config(&base, "alice").await["CREDITS_PAYMENTS"], false);
    let again = run(&["import", file]).await.unwrap();
    assert_eq!(again.stdout.trim(), "0 change(s)", "idempotent");
    let exported = run(&["export"]).await.unwrap().stdout;
    let doc_now: Value = serde_yaml_ng::from_str(&exported).unwrap();
    let checkout = doc_now["flags"].as_array().unwrap().iter().find(|f| f["key"] == "NEW_CHECKOUT").unwrap();
    assert_eq!(checkout["approval"], json!(true), "the flag's own policy is exported");
    let history = run(&["history", "--json", "--limit", "5"]).await.unwrap();
    let history: Value = serde_json::from_str(&history.stdout).unwrap();
    assert!(
        history["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["reason"] == "ff import" && c["actor"] == "root")
    );

    // Operators removing an override in the file removes it.
    let i = find(doc["flags"].as_array_mut().unwrap(), "CAPTIONER_HOURLY_RATE_MIN");
    doc["flags"][i]["overrides"] = json!({});
    std::fs::write(file, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let removed = run(&["import", file]).await.unwrap();
    assert!(removed.stdout.contains("- CAPTIONER_HOURLY_RATE_MIN override tester"), "{}", removed.stdout);

    // Segments from a file; a rule may then name it.
    let seg_file = dir.path().join("testers.yaml");
    std::fs::write(&seg_file, "description: QA\nincluded: [qa-1, qa-2]\n").unwrap();
    let put =
        run(&["segment", "put", "testers", seg_file.to_str().unwrap(), "--reason", "beta"]).await.unwrap();
    assert_eq!(put.code, 0, "{}", put.stderr);
    assert_eq!(put.stdout.trim(), "segment testers saved (version 1)");
    assert_eq!(row(&run(&["segments"]).await.unwrap().stdout, "testers")[1..5], ["2", "0", "0", "1"]);
    let got = run(&["segment", "get", "testers"]).await.unwrap().stdout;
    assert!(got.starts_with("# segment testers version 1") && got.contains("- qa-1"), "{got}");
    // What `get` prints, `put` takes back.
    std::fs::write(&seg_file, &got).unwrap();
    let back = run(&["segment", "put", "testers", seg_file.to_str().unwrap()]).await.unwrap();
    assert_eq!(back.stdout.trim(), "segment testers unchanged", "{}", back.stderr);
    std::fs::write(&seg_file, "included: [\"\"]\n").unwrap();
    let bad = run(&["segment", "put", "testers", seg_file.to_str().unwrap()]).await.unwrap();
    assert!(bad.code == 1 && bad.stderr.contains("user id is empty"), "{}", bad.stderr);
    assert_eq!(run(&["segment", "rm", "testers"]).await.unwrap().code, 0);
    let gone = run(&["segment", "rm", "testers"]).await.unwrap();
    assert!(gone.code == 1 && gone.stderr.contains("404"), "{}", gone.stderr);

    // Bad files: a clear one-line error, exit 1, nothing written.
    let before = run(&["export", "--json"]).await.unwrap().stdout;
    for (content, says) in [
        ("flags: [unclosed", "not valid YAML"),
        ("nothing: here", "top-level `flags:`"),
        ("flags:\n  - key: NEW_CHECKOUT\n    type: string\n    value: x", "types come from code"),
        (
            "flags:\n  - key: MINIMUM_TIME_REQUIRED_BEFORE_BOOKING\n    value: 400d",
            "above the maximum \"8760h\"",
        ),
        // All or nothing: the valid first change is not written either.
        (
            "flags:\n  - key: NEW_CHECKOUT\n    value: false\n  - key: MINIMUM_TIME_REQUIRED_BEFORE_BOOKING\n    value: 400d",
            "nothing was written: 422 invalid_value: change 1 of the batch",
        ),
    ] {
        std::fs::write(file, content).unwrap();
        let out = run(&["import", file]).await.unwrap();
        assert_eq!(out.code, 1, "{content}");
        assert_eq!(out.stderr.lines().count(), 1, "{content}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{content}: {}", out.stderr);
    }
    assert_eq!(run(&["export", "--json"]).await.unwrap().stdout, before);
    let missing = run(&["import", "/nonexistent/flags.yaml"]).await.unwrap();
    assert!(missing.code == 1 && missing.stderr.contains("cannot read"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_exits_1_when_anything_is_stale() {
    let example = start_example().await;
    let (base, token) = (example.base.clone(), first_token(&example.db).await);
    let url = format!("{base}/admin");
    let run = |args: &[&str]| run_as(&url, &token, args);
    // Every flag of the example is fresh: nothing to clean up.
    let clean = run(&["stale"]).await.unwrap();
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    assert!(clean.stdout.starts_with("KEY"), "{}", clean.stdout);
    // A flag past its expiry.
    let expired = run(&["--json", "stale"]).await.unwrap();
    assert_eq!(expired.code, 0);
    let body = json!({"expires_at": "2020-01-01T00:00:00Z"});
    let r = reqwest::Client::new()
        .patch(format!("{url}/api/flags/NEW_CHECKOUT"))
        .bearer_auth(&token)
        .header("if-match", "\"1\"")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let stale = run(&["stale"]).await.unwrap();
    assert_eq!(stale.code, 1, "{}", stale.stdout);
    assert_eq!(
        row(&stale.stdout, "NEW_CHECKOUT")[1..4],
        ["release", "checkout", "expired"],
        "{}",
        stale.stdout
    );
    assert_eq!(stale.stderr.trim(), "ff: 1 stale flag");
    let json_out = run(&["--json", "stale"]).await.unwrap();
    assert_eq!(json_out.code, 1);
    let parsed: Value = serde_json::from_str(&json_out.stdout).unwrap();
    assert_eq!(parsed["stale"][0]["key"], "NEW_CHECKOUT");
    // Wider windows are passed on; bad ones are refused with the server's reason.
    let bad = run(&["stale", "--not-evaluated-days", "0"]).await.unwrap();
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("not_evaluated_days must be 1 to 365"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_a_fixture_tree_with_known_answers() {
    let example = start_example().await;
    let (base, token) = (example.base.clone(), first_token(&example.db).await);
    let url = format!("{base}/admin");
    // NEW_CHECKOUT expires: still referenced in two files.
    let r = reqwest::Client::new()
        .patch(format!("{url}/api/flags/NEW_CHECKOUT"))
        .bearer_auth(&token)
        .header("if-match", "\"1\"")
        .json(&json!({"expires_at": "2020-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scan");
    let scan = |args: &'static [&'static str]| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_ff"))
                .args(args)
                .current_dir(fixture)
                .env("FF_URL", &url)
                .env("FF_TOKEN", &token)
                .output()
                .unwrap()
        })
    };
    let out = scan(&["scan", "."]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout,
        "scanned 3 files\n\
         \n\
         declared in code, missing from the store:\n  CAPTIONER_SEATS  ./src/settings.rs:11\n  DARK_MODE  ./src/flags.rs:6\n\
         \n\
         in the store, nowhere in code (safe to archive):\n  EXTERNAL_CALENDAR_INTEGRATION\n\
         \n\
         stale or expired, still in code (remove these uses first):\n  NEW_CHECKOUT (expired)  ./src/flags.rs:4, ./web/checkout.js:3\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "ff: scan found 4 keys to act on");
    let out = scan(&["scan", "--format", "json", "src", "web"]).await.unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"], 3);
    assert_eq!(report["missing_from_store"][1]["places"], json!([{"file": "src/flags.rs", "line": 6}]));
    assert_eq!(report["stale_in_code"][0]["reasons"], json!(["expired"]));
    // Only the build output mentions EXTERNAL_CALENDAR_INTEGRATION; naming it explicitly scans it.
    let out = scan(&["--json", "scan", "target"]).await.unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!report["unreferenced"].as_array().unwrap().contains(&json!("EXTERNAL_CALENDAR_INTEGRATION")));
    // Errors: a missing path, a bad format.
    let out = scan(&["scan", "no/such/dir"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dir does not exist"));
    let out = scan(&["scan", "--format", "xml", "."]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format must be text or json"));
}

/// `ff token create --database-url` takes every store URL the example does.
#[tokio::test]
async fn token_create_works_on_every_store_url() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display());
    let mut urls = vec![(sqlite.clone(), None)];
    if let Some(pg) = ff_store::postgres_test_database().await {
        urls.push((pg, None));
    }
    if let Ok(redis) = std::env::var("FF_TEST_REDIS_URL") {
        let prefix = format!("ff_t_cli_{}", std::process::id());
        urls.push((format!("{redis}/?prefix={prefix}"), Some(prefix)));
    }
    for (url, _) in &urls {
        let run = ff(&["token", "create", "--name", "first", "--role", "admin", "--database-url", url], &[]);
        assert_eq!(run.code, 0, "{url}: {}", run.stderr);
        assert!(run.stdout.trim().starts_with("ff_"), "{url}: {}", run.stdout);
        let store = ff_store::store_from_url(url).unwrap();
        let tokens = store.tokens().await.unwrap();
        assert_eq!(tokens.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["first"], "{url}");
        // The name is taken now: a clear refusal, nothing written.
        let again =
            ff(&["token", "create", "--name", "first", "--role", "admin", "--database-url", url], &[]);
        assert_ne!(again.code, 0);
        assert!(again.stderr.contains("exists already"), "{url}: {}", again.stderr);
    }
    // A URL no store takes, and a read-only file: refused with the reason.
    let bad =
        ff(&["token", "create", "--name", "x", "--role", "admin", "--database-url", "mysql://h/db"], &[]);
    assert!(bad.code != 0 && bad.stderr.contains("unsupported store URL"), "{}", bad.stderr);
    let file = dir.path().join("flags.yaml");
    std::fs::write(&file, "flags: []\n").unwrap();
    let url = format!("file:{}", file.display());
    let ro = ff(&["token", "create", "--name", "x", "--role", "admin", "--database-url", &url], &[]);
    assert!(ro.code != 0 && ro.stderr.contains("change the file"), "{}", ro.stderr);
}

#[test]
fn coverage_reports_flags_read_in_one_state_and_declared_flags_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // Two test processes' files (what ff-core writes with FF_FLAG_COVERAGE).
    std::fs::write(
        dir.path().join("ff-flag-coverage-1.tsv"),
        "NEW_CHECKOUT\tbool\tfalse\nDARK_MODE\tbool\ttrue\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ff-flag-coverage-2.tsv"),
        "NEW_CHECKOUT\tbool\ttrue\nMINIMUM_TIME_REQUIRED_BEFORE_BOOKING\tint\t0\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("unrelated.txt"), "not a coverage file").unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scan/src");
    let out = ff(&["coverage", d], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "3 flags read by the tests (2 files)\n\n\
         read in one state only (test the other):\n  DARK_MODE  only true\n  MINIMUM_TIME_REQUIRED_BEFORE_BOOKING  only 0\n"
    );
    let out = ff(&["coverage", d, "--scan", fixture, "--fail"], &[]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("declared in code, never read by the tests:\n  CAPTIONER_HOURLY_RATE_MAX\n"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stderr.trim(), "ff: 5 flags not covered in every state", "{}", out.stdout);
    let json = ff(&["--json", "coverage", d], &[]);
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["read"]["NEW_CHECKOUT"]["values"], json!(["false", "true"]));
    // A missing directory says how to make one; a malformed line names its file and line.
    let missing = ff(&["coverage", "/no/such/dir"], &[]);
    assert!(
        missing.code == 1 && missing.stderr.contains("FF_FLAG_COVERAGE=/no/such/dir"),
        "{}",
        missing.stderr
    );
    std::fs::write(dir.path().join("ff-flag-coverage-3.tsv"), "broken line\n").unwrap();
    let bad = ff(&["coverage", d], &[]);
    assert!(bad.code == 1 && bad.stderr.contains("ff-flag-coverage-3.tsv:1"), "{}", bad.stderr);
}

/// `ff guard`: sets a guard on a rollout (refused by name without one to watch or
/// with bad JSON), shows the test and each variation's counts as the example's
/// traffic comes in, and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_a_rollout_from_the_terminal() {
    let example = start_example().await;
    let (base, token) = (example.base.clone(), first_token(&example.db).await);
    let url = format!("{base}/admin");
    let run = |args: &[&str]| run_as(&url, &token, args);

    let none = run(&["guard", "NEW_CHECKOUT"]).await.unwrap();
    assert_eq!((none.code, none.stdout.trim()), (0, "NEW_CHECKOUT: no guard"), "{}", none.stderr);
    let refused = run(&["guard", "NEW_CHECKOUT", "--set", "{}"]).await.unwrap();
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("a guard watches a percentage rollout"), "{}", refused.stderr);
    let bad = run(&["guard", "NEW_CHECKOUT", "--set", "{max: 1}"]).await.unwrap();
    assert!(bad.code == 1 && bad.stderr.contains("--set takes the guard as JSON"), "{}", bad.stderr);
    let unknown = run(&["guard", "NOPE"]).await.unwrap();
    assert!(unknown.code == 1 && unknown.stderr.contains("does not exist"), "{}", unknown.stderr);

    // A 50 % rollout (written as an import would), then its guard from the terminal.
    let store = SqlStore::connect(&example.db).await.unwrap();
    let split =
        json!({"split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]}});
    let patch =
        ff_store::FlagPatch { targeting: Some(serde_json::from_value(split).unwrap()), ..Default::default() };
    let m = ff_store::Mutation::UpdateFlag { key: "NEW_CHECKOUT".into(), patch, expected_version: None };
    ff_store::FlagWriter::write(&store, ff_store::Write::new("t", m)).await.unwrap();
    let set = run(&["guard", "NEW_CHECKOUT", "--set", r#"{"min_requests": 100}"#, "--reason", "watch it"])
        .await
        .unwrap();
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(set.stdout.starts_with("NEW_CHECKOUT: guarded (version "), "{}", set.stdout);

    let client = reqwest::Client::new();
    let start = Instant::now();
    let shown = loop {
        for i in 0..100 {
            let req = client.get(format!("{base}/checkout")).header("x-user-id", format!("user-{i}"));
            assert!(req.send().await.unwrap().status().is_success());
        }
        let shown = run(&["guard", "NEW_CHECKOUT"]).await.unwrap();
        assert_eq!(shown.code, 0, "{}", shown.stderr);
        if row(&shown.stdout, "(all)").get(3).is_some_and(|n| *n != "0") {
            break shown.stdout;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no counts shown: {}", shown.stdout);
    };
    assert!(
        shown.contains("guard: errors +1 points, alpha 0.05, 100 requests a side, then Rollback"),
        "{shown}"
    );
    assert!(shown.contains("1 instance(s) counted"), "{shown}");
    let treatment = row(&shown, "true");
    assert_eq!(treatment[1..3], ["treatment", "50"], "{shown}");
    assert!(row(&shown, "false")[1] == "control", "{shown}");
    let json_out = run(&["guard", "NEW_CHECKOUT", "--json"]).await.unwrap();
    let view: ff_api::GuardView = serde_json::from_str(&json_out.stdout).unwrap();
    assert!(view.state.unwrap().control.requests > 0);

    // Exported with its guard; imported from another store's export (its own start
    // stamp), the same guard is no change.
    let exported = run(&["export"]).await.unwrap();
    let mut doc: Value = serde_yaml_ng::from_str(&exported.stdout).unwrap();
    let flags = doc["flags"].as_array_mut().unwrap();
    let i = flags.iter().position(|f| f["key"] == "NEW_CHECKOUT").unwrap();
    assert_eq!(flags[i]["targeting"]["guard"]["min_requests"], 100, "{}", exported.stdout);
    flags[i]["targeting"]["guard"]["started"] = json!("2020-01-01T00:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flags.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let dry = run(&["import", file.to_str().unwrap(), "--dry-run"]).await.unwrap();
    assert!(dry.code == 0 && !dry.stdout.contains("NEW_CHECKOUT targeting"), "{}", dry.stdout);
    flags_guard_changed(&mut doc);
    std::fs::write(&file, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let dry = run(&["import", file.to_str().unwrap(), "--dry-run"]).await.unwrap();
    assert!(dry.stdout.contains("~ NEW_CHECKOUT targeting:"), "a changed guard is a change: {}", dry.stdout);

    let removed = run(&["guard", "NEW_CHECKOUT", "--remove"]).await.unwrap();
    assert!(
        removed.code == 0 && removed.stdout.starts_with("NEW_CHECKOUT: guard removed"),
        "{}",
        removed.stderr
    );
    let none = run(&["guard", "NEW_CHECKOUT"]).await.unwrap();
    assert_eq!(none.stdout.trim(), "NEW_CHECKOUT: no guard");
    let history = run(&["history", "NEW_CHECKOUT", "--limit", "2"]).await.unwrap();
    assert!(history.stdout.contains("watch it"), "{}", history.stdout);
    assert!(
        history.stdout.contains("false -> false (targeting)"),
        "what changed is named: {}",
        history.stdout
    );
}

/// `NEW_CHECKOUT`'s guard in an export, made stricter.
fn flags_guard_changed(doc: &mut Value) {
    let flags = doc["flags"].as_array_mut().unwrap();
    let i = flags.iter().position(|f| f["key"] == "NEW_CHECKOUT").unwrap();
    flags[i]["targeting"]["guard"]["max_error_increase"] = json!(0.5);
}

/// `ff preview`: a targeting file checked by the store's own validation, what it would
/// change and what given users would get; exit 1 when it would be refused; nothing saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_a_targeting_edit_from_the_terminal() {
    let example = start_example().await;
    let (base, token) = (example.base.clone(), first_token(&example.db).await);
    let url = format!("{base}/admin");
    let run = |args: &[&str]| run_as(&url, &token, args);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targeting.yaml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write(
        "rules:\n  - clauses: [{attribute: plan, op: in, values: [pro, enterprise]}]\n    value: true\n\
         split: {variations: [{value: true, weight: 1000}, {value: false, weight: 9000}]}\n",
    );
    let f = file.to_str().unwrap();
    let ok = run(&["preview", "NEW_CHECKOUT", f, "--user", "alice plan=pro", "--user", "plan=free"])
        .await
        .unwrap();
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.starts_with("NEW_CHECKOUT: the store would accept this (version"), "{}", ok.stdout);
    assert!(ok.stdout.contains("  + rules: ") && ok.stdout.contains("  + split: "), "{}", ok.stdout);
    assert_eq!(
        row(&ok.stdout, "alice")[1..],
        ["plan=pro", "false", "(value)", "true", "(rule:0)"],
        "{}",
        ok.stdout
    );
    assert_eq!(row(&ok.stdout, "anonymous")[1..], ["plan=free", "false", "(value)", "false", "(value)"]);
    write("split: {variations: [{value: true, weight: 1000}, {value: false, weight: 9500}]}\n");
    let refused = run(&["preview", "NEW_CHECKOUT", f]).await.unwrap();
    assert_eq!(refused.code, 1);
    assert!(
        refused.stdout.contains("the store would refuse this: ") && refused.stdout.contains("weights"),
        "{}",
        refused.stdout
    );
    assert!(refused.stderr.contains("the edit would be refused"), "{}", refused.stderr);
    let history = run(&["history", "NEW_CHECKOUT"]).await.unwrap();
    assert_eq!(history.stdout.lines().count(), 2, "only its creation: {}", history.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_requests_and_scheduled_changes_from_the_terminal() {
    let example = start_example_with(|a| {
        a.require_approval([ff_core::FlagKind::Config]).schedule_interval(Duration::from_millis(100))
    })
    .await;
    let (base, root) = (example.base.clone(), first_token(&example.db).await);
    let url = format!("{base}/admin");
    let mut tokens = Vec::new();
    for name in ["ann", "bob"] {
        let made =
            run_as(&url, &root, &["token", "create", "--name", name, "--role", "editor"]).await.unwrap();
        assert_eq!(made.code, 0, "{}", made.stderr);
        tokens.push(made.stdout.trim().to_owned());
    }
    let (ann, bob) = (tokens[0].clone(), tokens[1].clone());
    const KEY: &str = "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING";

    // A config flag's change waits: `ff set` says so, exits 0, and nothing is served.
    let held = run_as(&url, &ann, &["set", KEY, "12h", "--reason", "shorter lead"]).await.unwrap();
    assert_eq!(held.code, 0, "{}", held.stderr);
    assert!(held.stdout.starts_with("held: request 1 holds this change"), "{}", held.stdout);
    assert!(held.stdout.contains("ff approve 1"), "{}", held.stdout);
    assert_eq!(config(&base, "alice").await[KEY], "24h");
    let list = run_as(&url, &bob, &["requests"]).await.unwrap();
    assert_eq!(row(&list.stdout, "1")[1], "pending", "{}", list.stdout);
    assert!(list.stdout.contains("value = \"12h\"") && list.stdout.contains("ann"), "{}", list.stdout);

    // Not by its author; by another editor, applied and served.
    let own = run_as(&url, &ann, &["approve", "1"]).await.unwrap();
    assert_eq!(own.code, 1);
    assert!(own.stderr.contains("403 not_allowed: ann made request 1"), "{}", own.stderr);
    let approved = run_as(&url, &bob, &["approve", "1"]).await.unwrap();
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    assert!(approved.stdout.contains("request 1 approved and applied"), "{}", approved.stdout);
    wait_for(&base, "alice", KEY, json!("12h")).await;
    let history = run_as(&url, &ann, &["history", KEY, "--limit", "5"]).await.unwrap();
    assert!(history.stdout.contains("ann (approved by bob)"), "{}", history.stdout);
    let again = run_as(&url, &bob, &["approve", "1"]).await.unwrap();
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("409 conflict: request 1 is applied, not pending"), "{}", again.stderr);

    // Switching off never waits, and the log says it was an emergency.
    let off = run_as(&url, &ann, &["off", KEY, "--reason", "incident"]).await.unwrap();
    assert_eq!(off.code, 0, "{}", off.stderr);
    assert!(off.stdout.contains("is OFF"), "{}", off.stdout);
    let history = run_as(&url, &ann, &["history", KEY, "--limit", "1"]).await.unwrap();
    assert!(history.stdout.contains("flag.update (emergency)"), "{}", history.stdout);
    let on = run_as(&url, &ann, &["on", KEY]).await.unwrap();
    assert!(on.stdout.starts_with("held: request 2"), "{}", on.stdout);
    let rejected = run_as(&url, &bob, &["reject", "2", "--reason", "keep it off"]).await.unwrap();
    assert_eq!(rejected.code, 0, "{}", rejected.stderr);
    assert!(rejected.stdout.contains("request 2 is rejected"), "{}", rejected.stdout);

    // Scheduled: waits for approval and for its time, then applies once.
    let at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let scheduled =
        run_as(&url, &ann, &["on", KEY, "--at", &at, "--reason", "after the incident"]).await.unwrap();
    assert_eq!(scheduled.code, 0, "{}", scheduled.stderr);
    assert!(
        scheduled.stdout.contains("request 3 (pending): MINIMUM_TIME_REQUIRED_BEFORE_BOOKING: switch on at"),
        "{}",
        scheduled.stdout
    );
    let approved = run_as(&url, &bob, &["approve", "3"]).await.unwrap();
    assert!(approved.stdout.contains("request 3 approved: it applies at its time"), "{}", approved.stdout);
    let shown = run_as(&url, &ann, &["request", "3"]).await.unwrap();
    assert!(shown.stdout.contains("approved by: bob"), "{}", shown.stdout);
    assert_eq!(config(&base, "alice").await[KEY], "24h", "still off (its off value is the default)");
    wait_for(&base, "alice", KEY, json!("12h")).await;
    let all = run_as(&url, &ann, &["requests", "--all", "--json"]).await.unwrap();
    let all: ff_api::RequestList = serde_json::from_str(&all.stdout).unwrap();
    let statuses: Vec<&str> = all.requests.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["applied", "rejected", "applied"]);
    assert_eq!(all.requests[0].decision.as_ref().unwrap().by, ff_admin::SCHEDULER);

    // Bad times are refused before anything is sent, or by the server.
    let bad = run_as(&url, &ann, &["set", KEY, "1h", "--at", "tomorrow"]).await.unwrap();
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("is not an RFC 3339 time"), "{}", bad.stderr);
    let past = run_as(&url, &ann, &["set", KEY, "1h", "--at", "2020-01-01T00:00:00Z"]).await.unwrap();
    assert_eq!(past.code, 1);
    assert!(
        past.stderr.contains("400 bad_request: apply_at 2020-01-01T00:00:00Z is not in the future"),
        "{}",
        past.stderr
    );
    let none = run_as(&url, &ann, &["approve", "99"]).await.unwrap();
    assert!(none.stderr.contains("404 not_found: no request 99"), "{}", none.stderr);

    // An import touching a flag under the policy is held whole.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flags.yaml");
    std::fs::write(&file, format!("flags:\n  - key: {KEY}\n    value: 6h\n")).unwrap();
    let imported = run_as(&url, &ann, &["import", file.to_str().unwrap()]).await.unwrap();
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    assert!(imported.stdout.contains("held: request 4 holds this change"), "{}", imported.stdout);
    assert_eq!(config(&base, "alice").await[KEY], "12h");
    run_as(&url, &ann, &["reject", "4"]).await.unwrap();

    // Webhooks: admins only; an unreachable one shows its failures.
    let refused = run_as(&url, &ann, &["webhook", "add", "http://127.0.0.1:9/hook"]).await.unwrap();
    assert!(refused.stderr.contains("403 forbidden"), "{}", refused.stderr);
    let added =
        run_as(&url, &root, &["webhook", "add", "http://127.0.0.1:9/hook", "--event", "flag", "--slack"]);
    let added = added.await.unwrap();
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert!(added.stdout.starts_with("webhook 1 added"), "{}", added.stdout);
    assert_eq!(added.stdout.lines().nth(1).unwrap().len(), 64, "the secret");
    run_as(&url, &ann, &["set", "NEW_CHECKOUT", "true"]).await.unwrap();
    let start = Instant::now();
    loop {
        let list = run_as(&url, &root, &["webhooks"]).await.unwrap();
        let r = row(&list.stdout, "1");
        if r.len() > 5 && r[5] != "0" {
            assert_eq!(&r[1..4], ["http://127.0.0.1:9/hook", "flag", "slack"]);
            assert!(list.stdout.contains("cannot connect"), "{}", list.stdout);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no failure shown: {}", list.stdout);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bad = run_as(&url, &root, &["webhook", "add", "ftp://x", "--event", "flags"]).await.unwrap();
    assert!(bad.stderr.contains("400 bad_request"), "{}", bad.stderr);
    let rm = run_as(&url, &root, &["webhook", "rm", "1"]).await.unwrap();
    assert_eq!(rm.stdout.trim(), "webhook 1 removed");
    let gone = run_as(&url, &root, &["webhook", "rm", "1"]).await.unwrap();
    assert!(gone.stderr.contains("404 not_found: no webhook 1"), "{}", gone.stderr);
}
