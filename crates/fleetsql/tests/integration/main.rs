//! Every integration test of fleetsql, built into one test binary.

mod cluster;
mod demo;
mod fixture;
mod pqa;
mod slt;
