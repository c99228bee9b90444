#[derive(ff_core::Config)]
enum Settings {
    A,
}

fn main() {}
