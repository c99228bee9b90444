//! Admin writes racing on PostgreSQL: 20 editors read the same version of one flag
//! and all write with `If-Match` at once. Exactly one wins per version; every loser
//! gets 409; the audit log holds exactly the successful writes; nothing is lost.

use std::sync::Arc;

use ff_store::{ChangeQuery, FlagWriter, Role, Source, SqlStore};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_editors_one_flag() {
    let Some(url) = ff_store::postgres_test_database().await else { return };
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let source = Source::builder_arc(store.clone()).start().await;
    let admin = ff_admin::Admin::new(store.clone());
    let mut tokens = Vec::new();
    for i in 0..20 {
        let (_, t) = ff_admin::create_token(&*store, &format!("editor-{i}"), Role::Editor, "test", None)
            .await
            .unwrap();
        tokens.push(t);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/admin/api/flags/CAPTIONER_HOURLY_RATE_MIN", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, ff_axum_example::make_service(source, admin)).await });
    let http = reqwest::Client::new();
    let before = store.changes(&ChangeQuery { limit: 1000, ..ChangeQuery::default() }).await.unwrap().len();

    let mut wins = Vec::new();
    for round in 0..5 {
        // Everyone reads the same version, then everyone writes.
        let etag = http.get(&base).bearer_auth(&tokens[0]).send().await.unwrap().headers()["etag"].clone();
        let writes = tokens.iter().enumerate().map(|(i, token)| {
            let (http, base, etag, token) = (http.clone(), base.clone(), etag.clone(), token.clone());
            let value = 100 + round * 20 + i;
            async move {
                let res = http
                    .patch(&base)
                    .bearer_auth(&token)
                    .header("if-match", etag)
                    .json(&json!({ "value": value, "reason": format!("editor {i}") }))
                    .send()
                    .await
                    .unwrap();
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                (i, value, status, body)
            }
        });
        let results = futures_join(writes.collect()).await;
        let ok: Vec<_> = results.iter().filter(|r| r.2 == 200).collect();
        assert_eq!(ok.len(), 1, "round {round}: exactly one write wins: {results:?}");
        for (_, _, status, body) in results.iter().filter(|r| r.2 != 200) {
            assert_eq!((*status, body["error"].as_str()), (409, Some("version_conflict")), "{body}");
        }
        let (winner, value, _, _) = ok[0];
        wins.push((format!("editor-{winner}"), *value));
        // Nothing lost: the flag holds the winner's value.
        let now: Value = http.get(&base).bearer_auth(&tokens[0]).send().await.unwrap().json().await.unwrap();
        assert_eq!(now["flag"]["value"], json!(*value as f64));
    }
    // The audit log: exactly the five winning writes, by the winners, in order.
    let log = store.changes(&ChangeQuery { limit: 1000, ..ChangeQuery::default() }).await.unwrap();
    assert_eq!(log.len() - before, 5);
    let mut written: Vec<(String, Value)> =
        log[..5].iter().map(|c| (c.actor.clone(), c.after.as_ref().unwrap()["value"].clone())).collect();
    written.reverse(); // newest first
    let expected: Vec<(String, Value)> = wins.into_iter().map(|(a, v)| (a, json!(v as f64))).collect();
    assert_eq!(written, expected);
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
