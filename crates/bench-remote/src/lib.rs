//! Cronium's remote-execution benchmarks: SSH fan-out against parallel-ssh and Ansible, and
//! container overhead against a plain `docker run`, all measured in one run on the same local
//! hosts. The binary `cronium-bench-remote` is a thin front over [`fanout::run`] and
//! [`container::run`].
//!
//! Not a test suite: it measures and reports; pass/fail against PRODUCT.md's targets is printed,
//! never asserted.

pub mod binaries;
pub mod container;
pub mod cronium;
pub mod fanout;
pub mod helpers;
pub mod hosts;
pub mod peers;
pub mod procs;
pub mod stats;
