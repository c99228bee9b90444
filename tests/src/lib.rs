//! Cross-crate integration tests for ff live in `tests/`.
