#[derive(ff_core::Config)]
#[ff(rule = "a =< b")]
struct Settings {
    #[ff(default = 1)]
    a: i64,
    #[ff(default = 2)]
    b: i64,
}

fn main() {}
