//! The layer through axum and `oneshot`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use ff_core::{Config, ConfigReader, EvalContext, Flag, Reason};
use ff_store::TestFlags;
use ff_tower::{Current, CurrentWith, Flags, FlagsLayer, UserIdHeader};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tower::{Service, ServiceBuilder, ServiceExt};

const CALENDAR: Flag<bool> = Flag::new("CALENDAR", false);
const CREDITS: Flag<bool> = Flag::new("CREDITS", true);
const LEAD_HOURS: Flag<i64> = Flag::new("LEAD_HOURS", 24).range(0, 1000);
const RATE_MIN: Flag<f64> = Flag::new("RATE_MIN", 60.0);

#[derive(Debug)]
struct AppConfig {
    lead_hours: i64,
    rate_min: f64,
}

impl Config for AppConfig {
    fn from_flags(f: &ConfigReader<'_>) -> Self {
        AppConfig { lead_hours: f.get(LEAD_HOURS), rate_min: f.get(RATE_MIN) }
    }
}

type AppCurrent = CurrentWith<AppConfig>;

fn app(flags: &TestFlags) -> Router {
    Router::new()
        .route("/calendar", get(|| async { Current::get(CALENDAR).to_string() }))
        .route("/credits", get(|| async { format!("{:?}", Current::detail(CREDITS)) }))
        .route(
            "/config",
            get(|| async {
                let c = AppCurrent::config();
                format!("{} {}", c.lead_hours, c.rate_min)
            }),
        )
        .route("/extract", get(|flags: Flags| async move { flags.get(LEAD_HOURS).to_string() }))
        .layer(FlagsLayer::new(flags.source()).make_context(UserIdHeader::new("x-user-id")))
}

async fn call(app: &Router, path: &str, user: Option<&str>) -> String {
    let mut req = Request::get(path);
    if let Some(u) = user {
        req = req.header("x-user-id", u);
    }
    let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn defaults_when_nothing_is_set() {
    let flags = TestFlags::new();
    let app = app(&flags);
    assert_eq!(call(&app, "/calendar", None).await, "false");
    assert_eq!(call(&app, "/config", Some("anyone")).await, "24 60");
    assert!(call(&app, "/credits", None).await.contains("reason: Default"));
}

#[tokio::test]
async fn override_beats_global_both_states() {
    let flags = TestFlags::new();
    let app = app(&flags);
    flags.set(CALENDAR, false).set_override(CALENDAR, "tester", true);
    assert_eq!(call(&app, "/calendar", Some("tester")).await, "true");
    assert_eq!(call(&app, "/calendar", Some("alice")).await, "false");
    assert_eq!(call(&app, "/calendar", None).await, "false");
    flags.set(CALENDAR, true).set_override(CALENDAR, "tester", false);
    assert_eq!(call(&app, "/calendar", Some("tester")).await, "false");
    assert_eq!(call(&app, "/calendar", Some("alice")).await, "true");
}

#[tokio::test]
async fn kill_switch_beats_override() {
    let flags = TestFlags::new();
    let app = app(&flags);
    flags.set(CREDITS, true).set_override(CREDITS, "tester", true);
    assert!(call(&app, "/credits", Some("tester")).await.contains("value: true, reason: Override"));
    flags.set_enabled(CREDITS, false);
    assert!(call(&app, "/credits", Some("tester")).await.contains("value: false, reason: Disabled"));
    assert!(call(&app, "/credits", Some("alice")).await.contains("value: false, reason: Disabled"));
    flags.set_enabled(CREDITS, true);
    assert!(call(&app, "/credits", Some("alice")).await.contains("value: true, reason: Global"));
}

#[tokio::test]
async fn typed_config_per_user() {
    let flags = TestFlags::new();
    let app = app(&flags);
    flags.set(LEAD_HOURS, 48).set_override(LEAD_HOURS, "tester", 0).set_override(RATE_MIN, "tester", 1.0);
    assert_eq!(call(&app, "/config", Some("tester")).await, "0 1");
    assert_eq!(call(&app, "/config", Some("alice")).await, "48 60");
    assert_eq!(call(&app, "/extract", Some("tester")).await, "0");
    // Out of bounds in the store: the code default.
    flags.set(LEAD_HOURS, 5000);
    assert_eq!(call(&app, "/config", Some("alice")).await, "24 60");
}

#[tokio::test]
async fn snapshot_swapped_between_two_requests() {
    let flags = TestFlags::new();
    let app = app(&flags);
    flags.set(CALENDAR, true);
    assert_eq!(call(&app, "/calendar", None).await, "true");
    flags.set(CALENDAR, false);
    assert_eq!(call(&app, "/calendar", None).await, "false");
}

#[tokio::test]
async fn a_flip_during_a_request_is_not_seen_by_it() {
    let flags = TestFlags::new();
    flags.set(CALENDAR, false).set(LEAD_HOURS, 1);
    let (reached_tx, reached_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let reached = Arc::new(std::sync::Mutex::new(Some(reached_tx)));
    let go = Arc::new(std::sync::Mutex::new(Some(go_rx)));
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let reached = reached.lock().unwrap().take().unwrap();
                let go = go.lock().unwrap().take().unwrap();
                async move {
                    let before = (Current::get(CALENDAR), AppCurrent::config().lead_hours);
                    reached.send(()).unwrap();
                    go.await.unwrap();
                    let after = (Current::get(CALENDAR), AppCurrent::config().lead_hours);
                    format!("{before:?} {after:?}")
                }
            }),
        )
        .layer(FlagsLayer::new(flags.source()));
    let req = tokio::spawn(call_owned(app.clone()));
    reached_rx.await.unwrap();
    flags.set(CALENDAR, true).set(LEAD_HOURS, 2);
    go_tx.send(()).unwrap();
    assert_eq!(req.await.unwrap(), "(false, 1) (false, 1)");
    // The next request sees the change.
    let after = Router::new()
        .route("/", get(|| async { Current::get(CALENDAR).to_string() }))
        .layer(FlagsLayer::new(flags.source()));
    assert_eq!(call(&after, "/", None).await, "true");
}

async fn call_owned(app: Router) -> String {
    call(&app, "/", None).await
}

#[tokio::test]
async fn spawned_tasks_with_and_without_propagation() {
    let flags = TestFlags::new();
    flags.set(LEAD_HOURS, 7).set_override(LEAD_HOURS, "tester", 0);
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                let plain = tokio::spawn(async { (Current::try_get(LEAD_HOURS), Current::get(LEAD_HOURS)) });
                let carried = ff_tower::spawn(async { Current::get(LEAD_HOURS) });
                let blocking = ff_tower::spawn_blocking(|| Current::get(LEAD_HOURS));
                let plain_blocking = tokio::task::spawn_blocking(|| Current::try_get(LEAD_HOURS));
                format!(
                    "{:?} {} {} {:?}",
                    plain.await.unwrap(),
                    carried.await.unwrap(),
                    blocking.await.unwrap(),
                    plain_blocking.await.unwrap()
                )
            }),
        )
        .layer(FlagsLayer::new(flags.source()).make_context(UserIdHeader::new("x-user-id")));
    assert_eq!(call(&app, "/", Some("tester")).await, "(None, 24) 0 0 None");
}

#[tokio::test]
async fn context_from_extensions_and_closures() {
    let flags = TestFlags::new();
    flags.set_override(CALENDAR, "ext-user", true);
    let inner = Router::new().route("/", get(|| async { Current::get(CALENDAR).to_string() }));
    // Default MakeContext: an EvalContext put in extensions by an auth layer.
    let with_ext = inner.clone().layer(FlagsLayer::new(flags.source())).layer(axum::middleware::map_request(
        |mut req: Request<Body>| async move {
            req.extensions_mut().insert(EvalContext::user("ext-user"));
            req
        },
    ));
    assert_eq!(call(&with_ext, "/", None).await, "true");
    let closure =
        inner.layer(FlagsLayer::new(flags.source()).make_context(|parts: &http::request::Parts| {
            EvalContext::user(parts.uri.query().unwrap_or("anon"))
        }));
    assert_eq!(call(&closure, "/?ext-user", None).await, "true");
    assert_eq!(call(&closure, "/?other", None).await, "false");
}

#[tokio::test]
async fn extractor_without_layer_is_a_clear_500() {
    let app = Router::new().route("/", get(|flags: Flags| async move { flags.get(CALENDAR).to_string() }));
    let res = app.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("flags_layer_missing"));
}

#[test]
fn reads_outside_a_scope_serve_defaults() {
    assert!(!Current::get(CALENDAR));
    assert_eq!(Current::try_get(CALENDAR), None);
    assert_eq!(Current::detail(CREDITS).reason, Reason::Default);
    assert_eq!(AppCurrent::config().lead_hours, 24);
}

#[tokio::test]
async fn config_is_built_once_per_snapshot_for_users_without_overrides() {
    let flags = TestFlags::new();
    flags.set(LEAD_HOURS, 3);
    let svc =
        ServiceBuilder::new().layer(FlagsLayer::new(flags.source())).service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(AppCurrent::config()))
        });
    let a = svc.clone().oneshot(Request::new(())).await.unwrap().into_body();
    let b = svc.clone().oneshot(Request::new(())).await.unwrap().into_body();
    assert!(Arc::ptr_eq(&a, &b));
    flags.set(LEAD_HOURS, 4);
    let c = svc.oneshot(Request::new(())).await.unwrap().into_body();
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(c.lead_hours, 4);
}

/// The layer is generic over the body: it wraps a tonic service unchanged.
#[tokio::test]
async fn tonic_body_type_compiles_and_runs() {
    let flags = TestFlags::new();
    flags.set(CALENDAR, true);
    let grpc_like = tower::service_fn(|_: Request<tonic::body::Body>| async {
        Ok::<_, Infallible>(http::Response::new(tonic::body::Body::new(http_body_util::Full::new(bytes_of(
            Current::get(CALENDAR),
        )))))
    });
    let mut svc = ServiceBuilder::new().layer(FlagsLayer::new(flags.source())).service(grpc_like);
    fn assert_service<S: Service<Request<tonic::body::Body>> + Clone + Send + 'static>(_: &S)
    where
        S::Future: Send,
    {
    }
    assert_service(&svc);
    let res = svc.ready().await.unwrap().call(Request::new(tonic::body::Body::empty())).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"true");
}

fn bytes_of(b: bool) -> axum::body::Bytes {
    axum::body::Bytes::from(b.to_string())
}

#[tokio::test]
async fn request_extension_only_when_asked() {
    let flags = TestFlags::new();
    flags.set(LEAD_HOURS, 9);
    let probe = tower::service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(http::Response::new(req.extensions().get::<Flags>().map(|f| f.get(LEAD_HOURS))))
    });
    let plain = ServiceBuilder::new().layer(FlagsLayer::new(flags.source())).service(probe);
    assert_eq!(plain.oneshot(Request::new(())).await.unwrap().into_body(), None);
    let with =
        ServiceBuilder::new().layer(FlagsLayer::new(flags.source()).with_request_extension()).service(probe);
    assert_eq!(with.oneshot(Request::new(())).await.unwrap().into_body(), Some(9));
}
