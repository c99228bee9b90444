//! A real gRPC server with ff's layer and a real tonic client: who is asking comes from
//! request metadata, the handler reads `Current`, and both states of every flag show.

use std::time::Duration;

use ff_store::{FlagPatch, FlagReader, FlagWriter, MemoryStore, Mutation, Source, Write};
use ff_tonic_example::proto::CheckoutRequest;
use ff_tonic_example::proto::checkout_client::CheckoutClient;
use tonic::transport::Channel;

async fn start() -> (MemoryStore, Source, CheckoutClient<Channel>, tokio::sync::oneshot::Sender<()>) {
    let store = MemoryStore::new();
    let source = Source::builder(store.clone()).start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = source.clone();
    tokio::spawn(async move {
        ff_tonic_example::serve(listener, serving, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let client = CheckoutClient::connect(format!("http://{addr}")).await.unwrap();
    (store, source, client, stop)
}

async fn write(store: &MemoryStore, source: &Source, m: Mutation) {
    store.write(Write::new("test", m)).await.unwrap();
    assert!(source.wait_for_version(store.latest_seq().await.unwrap(), Duration::from_secs(10)).await);
}

/// (checkout, pricing, lead hours) as `user` (with `plan`) sees them.
async fn ask(
    client: &mut CheckoutClient<Channel>,
    user: Option<&str>,
    plan: Option<&str>,
) -> (String, String, i64) {
    let mut req = tonic::Request::new(CheckoutRequest {});
    if let Some(u) = user {
        req.metadata_mut().insert("x-user-id", u.parse().unwrap());
    }
    if let Some(p) = plan {
        req.metadata_mut().insert("x-plan", p.parse().unwrap());
    }
    let reply = client.get_checkout(req).await.unwrap().into_inner();
    (reply.checkout, reply.pricing, reply.lead_hours)
}

fn pair(a: &str, b: &str, lead: i64) -> (String, String, i64) {
    (a.to_owned(), b.to_owned(), lead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_read_flags_for_the_user_in_the_metadata() {
    let (store, source, mut client, _stop) = start().await;
    // Code defaults, synced into the store; anonymous callers too.
    assert_eq!(ask(&mut client, Some("alice"), None).await, pair("classic", "classic", 24));
    assert_eq!(ask(&mut client, None, None).await, pair("classic", "classic", 24));
    let version = client.get_checkout(CheckoutRequest {}).await.unwrap().into_inner().flags_version;
    assert_eq!(version, store.latest_seq().await.unwrap());

    // Both states of NEW_CHECKOUT, for everyone.
    write(&store, &source, Mutation::set_value("NEW_CHECKOUT", true)).await;
    assert_eq!(ask(&mut client, Some("bob"), None).await, pair("new", "classic", 24));
    // One user's override, from the metadata's user id.
    write(&store, &source, Mutation::set_override("NEW_CHECKOUT_PRICING", "alice", true)).await;
    assert_eq!(ask(&mut client, Some("alice"), None).await, pair("new", "new", 24));
    assert_eq!(ask(&mut client, Some("bob"), None).await, pair("new", "classic", 24));
    // A rule on another metadata field.
    let rules = serde_json::json!({"rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "value": 0}]});
    let patch = FlagPatch { targeting: Some(serde_json::from_value(rules).unwrap()), ..Default::default() };
    write(
        &store,
        &source,
        Mutation::UpdateFlag {
            key: ff_tonic_example::LEAD_HOURS.key().into(),
            patch,
            expected_version: None,
        },
    )
    .await;
    assert_eq!(ask(&mut client, Some("bob"), Some("pro")).await.2, 0);
    assert_eq!(ask(&mut client, Some("bob"), Some("free")).await.2, 24);
    // And back: the kill switch off.
    write(&store, &source, Mutation::set_enabled("NEW_CHECKOUT", false)).await;
    assert_eq!(ask(&mut client, Some("alice"), None).await, pair("classic", "new", 24));
}

/// A guarded rollout over gRPC: the new checkout failing a fifth of its calls with
/// `UNAVAILABLE` is rolled back by the guardian; the same calls with nothing failing
/// are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_status_rolls_a_guarded_rollout_back() {
    for share in [0.2, 0.0] {
        let store = MemoryStore::new();
        let source = Source::builder(store.clone())
            .poll_interval(Duration::from_millis(20))
            .guard_interval(Duration::from_millis(20))
            .start()
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = ff_tonic_example::CheckoutService::failing(share).unwrap();
        tokio::spawn(ff_tonic_example::serve_service(
            listener,
            source.clone(),
            service,
            std::future::pending(),
        ));
        let mut client = CheckoutClient::connect(format!("http://{addr}")).await.unwrap();
        let guarded = serde_json::json!({
            "split": {"variations": [{"value": true, "weight": 5000}, {"value": false, "weight": 5000}]},
            "guard": {"min_requests": 100}
        });
        let patch =
            FlagPatch { targeting: Some(serde_json::from_value(guarded).unwrap()), ..Default::default() };
        write(
            &store,
            &source,
            Mutation::UpdateFlag { key: "NEW_CHECKOUT".into(), patch, expected_version: None },
        )
        .await;
        let rolled_back =
            || source.snapshot().flag("NEW_CHECKOUT").is_some_and(|f| f.targeting.split.is_none());
        let (mut failed, mut sent) = (0, 0);
        let most = if share > 0.0 { 10_000 } else { 4_000 };
        while sent < most && !rolled_back() {
            let mut req = tonic::Request::new(CheckoutRequest {});
            req.metadata_mut().insert("x-user-id", format!("user-{sent}").parse().unwrap());
            match client.get_checkout(req).await {
                Ok(_) => {}
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable);
                    failed += 1;
                }
            }
            sent += 1;
            if sent % 200 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let changes = store
            .changes(&ff_store::ChangeQuery {
                actor: Some("ff-guard".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        if share > 0.0 {
            assert!(rolled_back(), "rolled back within 10,000 calls ({failed} failed)");
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert!(changes[0].reason.as_deref().unwrap().starts_with("guarded rollout rolled back"));
            eprintln!("a fifth of the new checkout failing over gRPC: rolled back after {sent} calls");
        } else {
            assert!(!rolled_back() && changes.is_empty() && failed == 0, "A/A: left alone");
            let states = source.guard_states();
            assert!(matches!(states[0].verdict, ff_core::guard::Verdict::Healthy { .. }), "{states:?}");
        }
    }
}
