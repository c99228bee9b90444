//! Settings of the new kinds, declared in code, shared by the API, page and OFREP tests:
//! a duration, an enum and a list of durations.

#![allow(dead_code)] // each test binary uses some of them

use ff_core::Flag;

#[derive(ff_core::SettingEnum, Clone, Copy, Debug, PartialEq)]
pub(crate) enum Plan {
    Free,
    Pro,
}

pub(crate) const WINDOW: Flag<std::time::Duration> = Flag::new("WINDOW", "24h").range("1h", "365d");
pub(crate) const PLAN: Flag<Plan> = Flag::new("PLAN", Plan::Free);
pub(crate) const REMINDERS: Flag<Vec<std::time::Duration>> =
    Flag::<Vec<std::time::Duration>>::new("REMINDERS", &["1h", "90m"]);
