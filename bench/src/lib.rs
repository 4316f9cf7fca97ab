//! The benchmark suite lives in `benches/suite/`; run it with `cargo xtask bench [--quick]`.
