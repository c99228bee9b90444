#[derive(ff_core::SettingEnum, Clone, Copy)]
enum Plan {
    Free,
    #[ff(name = "Free")]
    Gratis,
}

fn main() {}
