#[derive(ff_core::Config)]
struct Settings {
    #[ff(min = 0)]
    lead_time_hours: u16,
}

fn main() {}
