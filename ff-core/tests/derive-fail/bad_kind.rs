#[derive(ff_core::Config)]
struct Settings {
    #[ff(default = true, kind = killswitch)]
    credits: bool,
}

fn main() {}
