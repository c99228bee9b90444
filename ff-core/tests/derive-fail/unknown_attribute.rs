#[derive(ff_core::Config)]
struct Settings {
    #[ff(default = 1, maximum = 5)]
    lead_time_hours: u16,
}

fn main() {}
