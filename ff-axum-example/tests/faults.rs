//! Faults, scripted and bounded, loopback only: the real example binary reaches
//! PostgreSQL through a TCP proxy the test can cut, which looks to the app exactly
//! like the database going away (established connections closed, new ones refused)
//! without stopping a server other tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ff_store::{FlagWriter, Mutation, SqlStore, Write};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The tests here load the machine on purpose: one at a time, so none skews another's timing.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Forwards loopback connections to PostgreSQL while up; when down, closes every
/// open connection and refuses new ones.
struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: String, up: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(up);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                if !*rx.borrow() {
                    drop(client); // refused: closed at once
                    continue;
                }
                let (target, mut down) = (target.clone(), rx.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else { return };
                    let (mut c, mut s) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut c, &mut s) => {}
                        // Both ends are dropped: the app's connections die under it.
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up: tx }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[path = "support/binary.rs"]
mod binary;
use binary::Binary as App;

async fn get(http: &reqwest::Client, url: String) -> Result<(u16, String), reqwest::Error> {
    let res = http.get(url).header("x-user-id", "alice").send().await?;
    Ok((res.status().as_u16(), res.text().await?))
}

async fn lead_time(http: &reqwest::Client, base: &str) -> Value {
    let (_, body) = get(http, format!("{base}/me/config")).await.unwrap();
    serde_json::from_str::<Value>(&body).unwrap()["MINIMUM_TIME_REQUIRED_BEFORE_BOOKING"].clone()
}

async fn until_lead_time(http: &reqwest::Client, base: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while lead_time(http, base).await != want {
        assert!(start.elapsed() < within, "lead time never became {want} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// The database URL with its host and port replaced by the proxy's; and the target.
fn through(url: &str, proxy: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (creds, rest) = rest.rsplit_once('@').map_or(("", rest), |(c, r)| (c, r));
    let path = &rest[rest.find('/').unwrap_or(rest.len())..];
    let at = if creds.is_empty() { String::new() } else { format!("{creds}@") };
    format!("{scheme}://{at}{proxy}{path}")
}

fn target(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = &rest[..rest.find('/').unwrap_or(rest.len())];
    if host.contains(':') { host.to_owned() } else { format!("{host}:5432") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_under_load_and_back() {
    let _serial = SERIAL.lock().await;
    let Some(url) = ff_store::postgres_test_database().await else { return };
    let direct = SqlStore::connect(&url).await.unwrap();
    direct.migrate().await.unwrap();
    let proxy = Proxy::start(target(&url), true).await;
    let app = App::start(&through(&url, proxy.addr), &[]);
    let http = reqwest::Client::new();
    let lead = "MINIMUM_TIME_REQUIRED_BEFORE_BOOKING";
    // The app synced its declarations; give it a fresh value to keep serving.
    let w = |m| Write::new("fault-test", m);
    until_lead_time(&http, &app.base, "24h", Duration::from_secs(10)).await;
    direct.write(w(Mutation::set_value(lead, "12h"))).await.unwrap();
    until_lead_time(&http, &app.base, "12h", Duration::from_secs(10)).await;

    // Load: four clients without pause, counting anything but a 2xx.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (http, base, stop, served, failed) =
            (http.clone(), app.base.clone(), stop.clone(), served.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(&http, format!("{base}/me/config")).await {
                    Ok((200, body)) if body.contains("\"MINIMUM_TIME_REQUIRED_BEFORE_BOOKING\":") => {
                        served.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    proxy.set(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While it is away: the last good value, stale health, a growing age, a warning.
    direct.write(w(Mutation::set_value(lead, "6h"))).await.unwrap();
    let (_, metrics1) = get(&http, format!("{}/metrics", app.base)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lead_time(&http, &app.base).await, "12h", "the last good value while the database is away");
    let (_, health) = get(&http, format!("{}/healthz", app.base)).await.unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["stale"], true, "{health}");
    let (_, metrics2) = get(&http, format!("{}/metrics", app.base)).await.unwrap();
    let (age1, age2) =
        (gauge(&metrics1, "ff_snapshot_age_seconds"), gauge(&metrics2, "ff_snapshot_age_seconds"));
    assert!(age2 >= 1.0 && age2 > age1, "age {age1} then {age2}");
    assert!(gauge(&metrics2, "ff_refresh_errors_total") >= 1.0, "{metrics2}");
    assert!(app.log().contains("cannot refresh flags"), "no warning in:\n{}", app.log());

    // Back: the change made meanwhile is served within about a second, no restart.
    proxy.set(true);
    let back = until_lead_time(&http, &app.base, "6h", Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "database away 2 s under load: {served} requests served, {failed} failed; fresh {back:?} after it returned"
    );
    assert_eq!(failed, 0);
    assert!(served > 100, "{served}");
    // Fresh again: a pooled connection the outage reset may fail one more refresh first.
    let start = Instant::now();
    loop {
        let (_, health) = get(&http, format!("{}/healthz", app.base)).await.unwrap();
        if health.contains("\"stale\":false") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "{health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_postgres_unreachable_then_it_appears() {
    let _serial = SERIAL.lock().await;
    let Some(url) = ff_store::postgres_test_database().await else { return };
    let direct = SqlStore::connect(&url).await.unwrap();
    direct.migrate().await.unwrap();
    let proxy = Proxy::start(target(&url), false).await;
    let started = Instant::now();
    let app = App::start(&through(&url, proxy.addr), &[]);
    let http = reqwest::Client::new();
    // Up within the startup timeout, serving the code defaults.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(lead_time(&http, &app.base).await, "24h");
    let (_, health) = get(&http, format!("{}/healthz", app.base)).await.unwrap();
    assert!(health.contains("\"origin\":\"defaults\""), "{health}");
    // The database appears (with a value the defaults do not have): the app becomes fresh.
    ff_store::sync(
        &direct,
        &<ff_axum_example::BookingConfig as ff_core::Settings>::declarations(),
        &Default::default(),
    )
    .await
    .unwrap();
    direct
        .write(Write::new("t", Mutation::set_value("MINIMUM_TIME_REQUIRED_BEFORE_BOOKING", "3h")))
        .await
        .unwrap();
    proxy.set(true);
    let fresh = until_lead_time(&http, &app.base, "3h", Duration::from_secs(3)).await;
    eprintln!("fresh {fresh:?} after the database appeared");
    let (_, health) = get(&http, format!("{}/healthz", app.base)).await.unwrap();
    assert!(health.contains("\"origin\":\"store\""), "{health}");
}

/// Flip storm: two flags released together are flipped as one batch 100 times a second
/// through the admin API while 64 connections read both; no response may see them
/// differ, and none may fail.
async fn flip_storm(database_url: &str) {
    let _serial = SERIAL.lock().await;
    const TOKEN: &str = "storm-test-admin-token-0123456789";
    const CLIENTS: usize = 64;
    const FLIPS: u64 = 300;
    let app = App::start(database_url, &[("FF_ADMIN_TOKEN", TOKEN)]);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS + 4).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let (served, failed, differed, new, classic) = (0, 1, 2, 3, 4);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (http, base, stop, counters) = (http.clone(), app.base.clone(), stop.clone(), counters.clone());
        clients.push(tokio::spawn(async move {
            let mut last_failure = None;
            while !stop.load(Ordering::Relaxed) {
                let reply =
                    http.get(format!("{base}/checkout")).header("x-user-id", format!("u{i}")).send().await;
                let body = match reply {
                    Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                    Ok(r) => {
                        last_failure = Some(format!("status {}", r.status()));
                        None
                    }
                    Err(e) => {
                        last_failure = Some(e.to_string());
                        None
                    }
                };
                let Some(body) = body else {
                    counters[failed].fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                counters[served].fetch_add(1, Ordering::Relaxed);
                let pair = (body["checkout"].as_str(), body["pricing"].as_str());
                match pair {
                    (Some("new"), Some("new")) => counters[new].fetch_add(1, Ordering::Relaxed),
                    (Some("classic"), Some("classic")) => counters[classic].fetch_add(1, Ordering::Relaxed),
                    _ => counters[differed].fetch_add(1, Ordering::Relaxed),
                };
            }
            last_failure
        }));
    }
    // The flipper: one batch of both flags every 10 ms, sent on schedule (not after
    // the previous one is answered: under this load an answer takes longer than 10 ms),
    // with at most 16 in flight: more only queue for the pool's 4 connections until
    // they time out, which measures this machine's speed rather than ff.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    let started = Instant::now();
    let (mut flips, mut sent) = (Vec::new(), Duration::ZERO);
    for n in 0..FLIPS {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let on = n % 2 == 0;
        let body = serde_json::json!({"reason": "flip storm", "changes": [
            {"op": "update", "key": "NEW_CHECKOUT", "value": on},
            {"op": "update", "key": "NEW_CHECKOUT_PRICING", "value": on},
        ]});
        sent = started.elapsed();
        let request = http.post(format!("{}/admin/api/batch", app.base)).bearer_auth(TOKEN).json(&body);
        flips.push(tokio::spawn(async move {
            let _permit = permit;
            let res = request.send().await.unwrap();
            let status = res.status();
            let reply: Value = res.json().await.unwrap();
            assert_eq!(status, 200, "flip {n}: {reply}");
            reply["changes"].as_array().map_or(0, Vec::len)
        }));
    }
    // Flips in flight together may land out of order: one that finds its value already
    // set changes nothing. Never one flag without the other.
    let (mut flipped, mut no_ops) = (0u64, 0u64);
    for f in flips {
        match f.await.unwrap() {
            2 => flipped += 1,
            0 => no_ops += 1,
            n => panic!("a flip changed {n} flags"),
        }
    }
    let answered = started.elapsed();
    // Let the last flip arrive, then stop the load.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    let [s, f, d, n, c] =
        [served, failed, differed, new, classic].map(|i| counters[i].load(Ordering::Relaxed));
    eprintln!(
        "flip storm: {FLIPS} batch flips sent in {sent:.2?} ({:.0}/s), all answered after {answered:.2?} \
         ({flipped} changed both flags, {no_ops} found them set already) under {CLIENTS} connections; \
         {s} responses ({n} new/new, {c} classic/classic), {d} mixed, {f} failed",
        FLIPS as f64 / sent.as_secs_f64()
    );
    assert_eq!(f, 0, "failed requests: {failures:?}");
    assert_eq!(d, 0, "responses saw NEW_CHECKOUT and NEW_CHECKOUT_PRICING differ");
    assert!(n > 0 && c > 0, "both states were served: {n} new, {c} classic");
    // The audit log holds every flip as a pair sharing its batch_end.
    let store = SqlStore::connect(database_url).await.unwrap();
    let log = store
        .changes(&ff_store::ChangeQuery {
            limit: 1000,
            actor: Some(ff_admin::ENV_ADMIN.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let storm: Vec<_> = log.iter().filter(|c| c.reason.as_deref() == Some("flip storm")).collect();
    assert_eq!(storm.len() as u64, 2 * flipped);
    assert!(storm.chunks(2).all(|p| p[0].batch_end == Some(p[0].seq) && p[1].batch_end == Some(p[0].seq)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_storm_on_postgres() {
    let Some(url) = ff_store::postgres_test_database().await else { return };
    flip_storm(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_storm_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    flip_storm(&format!("sqlite://{}?mode=rwc", dir.path().join("ff.db").display())).await;
}
