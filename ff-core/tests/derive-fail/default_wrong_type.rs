#[derive(ff_core::Config)]
struct Settings {
    #[ff(default = "24h")]
    lead_time_hours: u16,
}

fn main() {}
