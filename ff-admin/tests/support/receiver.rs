//! A webhook receiver for tests (ff-admin's, the example's and the browser test's):
//! on a loopback port, it keeps the headers and body of each post and answers 204, or
//! 500 while `refuse` lasts.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

/// What the receiver got, and how many posts to refuse first.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) got: Vec<(HeaderMap, Bytes)>,
    pub(crate) refuse: usize,
}

/// Starts a receiver; its URL and what it gets.
pub(crate) async fn receiver() -> (String, Arc<Mutex<Inbox>>) {
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let shared = inbox.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let inbox = shared.clone();
            async move {
                let mut inbox = inbox.lock().unwrap();
                if inbox.refuse > 0 {
                    inbox.refuse -= 1;
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                inbox.got.push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}
