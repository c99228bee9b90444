//! One module per engine, each loading the workloads from its own document format.

pub mod ff;
pub mod flagsmith;
pub mod growthbook;
pub mod launchdarkly;
pub mod unleash;
