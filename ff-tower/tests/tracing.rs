//! With `record_on_span`, the layer records the snapshot version and the user on
//! the request's span; without it, nothing.

use std::convert::Infallible;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use ff_core::Flag;
use ff_store::TestFlags;
use ff_tower::{FlagsLayer, UserIdHeader};
use http::Request;
use tower::{ServiceBuilder, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_record(&self, _: &span::Id, values: &span::Record<'_>, _: Context<'_, S>) {
        struct V<'a>(&'a mut Vec<String>);
        impl Visit for V<'_> {
            fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
                self.0.push(format!("{}={value:?}", field.name()));
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                self.0.push(format!("{}={value}", field.name()));
            }
        }
        values.record(&mut V(&mut self.0.lock().unwrap()));
    }
}

async fn recorded(record_on_span: bool) -> Vec<String> {
    const F: Flag<bool> = Flag::new("F", false);
    let flags = TestFlags::new();
    flags.set(F, true).set(F, false).set(F, true);
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let layer = FlagsLayer::new(flags.source()).make_context(UserIdHeader::new("x-user-id"));
    let layer = if record_on_span { layer.record_on_span() } else { layer };
    let svc =
        ServiceBuilder::new().layer(layer).service_fn(|_: Request<()>| async { Ok::<_, Infallible>(()) });
    let span =
        tracing::info_span!("request", ff.version = tracing::field::Empty, user_id = tracing::field::Empty);
    let _entered = span.enter();
    let req = Request::builder().header("x-user-id", "tester").body(()).unwrap();
    svc.oneshot(req).await.unwrap();
    capture.0.lock().unwrap().clone()
}

#[tokio::test]
async fn version_and_user_are_recorded_on_the_current_span_when_asked() {
    assert_eq!(recorded(true).await, ["ff.version=3", "user_id=tester"]);
    assert!(recorded(false).await.is_empty(), "not recorded by default");
}
