//! The parts of `perf_bench`.

pub mod setups;
