//! Test support: a `redis-server` of the test's own on a free port, and the contract suite that
//! every store implementation must pass.
//!
//! * `servers`: [`TestRedis`], [`TestSentinel`], [`TestCluster`] and [`free_port`].
//! * [`suite`]: the contract, one behaviour per function, in one file per concern; and
//!   [`store_contract_tests!`](crate::store_contract_tests), which makes a test of each.
//! * [`fuzz`]: the entry points of the fuzz targets.

pub mod fuzz;
mod servers;
pub mod suite;

pub use self::servers::{SENTINEL_MASTER, TestCluster, TestRedis, TestSentinel, free_port};
