#[derive(ff_core::Config)]
#[ff(rule = "rate_min <= rate_maximum")]
struct Settings {
    #[ff(default = 1.0)]
    rate_min: f64,
    #[ff(default = 2.0)]
    rate_max: f64,
}

fn main() {}
