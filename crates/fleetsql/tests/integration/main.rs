//! Every integration test of fleetsql, built into one test binary.

mod cluster;
mod console;
mod demo;
mod fixture;
mod slt;
mod webdriver;
