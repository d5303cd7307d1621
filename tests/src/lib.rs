//! Shared harness for the integration tests in `tests/tests/`.
