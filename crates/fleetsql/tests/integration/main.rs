//! Every integration test of fleetsql, built into one test binary.

mod alerts;
mod bench;
mod cluster;
mod console;
mod demo;
mod faults;
mod fixture;
mod flightsql;
mod flightsql_auth;
mod history;
mod http_auth;
mod integrations;
mod limits;
mod mtls;
mod package;
mod pg_auth;
mod pg_clients;
mod pg_wire;
mod pqa;
mod pqa_state;
mod prometheus;
mod security;
mod selfjoin;
mod sets;
mod slt;
mod tiers;
mod views;
mod watchdog;
mod webdriver;
mod xmpp;

// The Prosody launcher and test CA of the integrations crate's tests.
#[path = "../../../integrations/tests/common/prosody.rs"]
mod prosody;
#[path = "../../../integrations/tests/common/tls.rs"]
mod tls;
