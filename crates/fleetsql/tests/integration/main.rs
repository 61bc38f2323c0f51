//! Every integration test of fleetsql, built into one test binary.

mod alerts;
mod cluster;
mod demo;
mod fixture;
mod slt;
