#[derive(ff_core::Config)]
struct Settings {
    #[ff(default = 1, max = 300)]
    party: u8,
}

fn main() {}
