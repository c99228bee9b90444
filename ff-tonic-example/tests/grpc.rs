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
