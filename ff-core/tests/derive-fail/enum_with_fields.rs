#[derive(ff_core::SettingEnum, Clone, Copy)]
enum Plan {
    Free,
    Paid(u32),
}

fn main() {}
