//! Benchmarks: the project against the tools a user would otherwise use
