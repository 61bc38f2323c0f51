//! Every integration test of fleetsql, built into one test binary.

mod alerts;
mod bench;
mod cluster;
mod console;
mod demo;
mod fixture;
mod integrations;
mod pqa;
mod slt;
mod tiers;
mod webdriver;
