#[derive(ff_core::Config)]
struct Settings {
    #[ff(default = 1)]
    rate: i64,
    #[ff(default = 2, key = "RATE")]
    other_rate: i64,
}

fn main() {}
