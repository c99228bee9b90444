#[derive(ff_core::Config)]
#[ff(rule = "rate_min <= rate_max")]
struct Settings {
    #[ff(default = 1.0)]
    rate_min: f64,
    #[ff(default = 2)]
    rate_max: i64,
}

fn main() {}
