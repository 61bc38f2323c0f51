//! Faults as a real fleet has them (issue 20): links cut inside network
//! namespaces, slow and lossy links through a fault-injecting proxy (this
//! kernel has no `netem`), processes killed with -9 under a client load.
//! Each test prints one `FAULTS` line of figures, which `scripts/faults`
//! collects into a table.

pub(crate) mod fleet;
pub(crate) mod netns;
pub(crate) mod notify;
pub(crate) mod proxy;

mod clock;
mod disk;
mod kill;
mod partition;
mod slow;

/// A lab for the test, or `None` after printing why the test is skipped.
pub(crate) fn lab_or_skip(test: &str) -> Option<netns::Lab> {
    match netns::Lab::new() {
        Ok(lab) => Some(lab),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// One machine-readable line of figures for `scripts/faults`.
pub(crate) fn report(scenario: &str, figures: &[(&str, String)]) {
    let fields: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("FAULTS scenario={scenario} {}", fields.join(" "));
}
