//! SQL node behaviour over generations a test hands out one by one
//! ([`fleetsql_aggregator::WatchChild`]), in one test binary.

mod catalog;
mod execution;
mod hooks;
mod prepared;
mod views;
