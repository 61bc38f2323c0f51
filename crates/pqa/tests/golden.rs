//! Golden files: `tests/golden/*.epl`, one per family of Esper behaviour,
//! each a list of cases driven on the manual clock. Every case runs three
//! ways (general path, kernels on with one event at a time, kernels on with
//! one-event batches) and each must give exactly the expected outputs.
//!
//! Format (line based; `#` starts a comment line):
//!
//! ```text
//! case <title>
//! setup <epl>        a statement whose outputs are not checked (insert into feeders)
//! epl <epl>          the checked statement; indented lines continue it
//! kernel             the checked statement must compile to a kernel
//! error <text>       registering `epl` must fail with a message containing <text>
//! t=<ms>             advance the clock to <ms>
//! <Stream> {json}    push an event at the current time
//! out <ms>           one expected output (one listener call) at <ms> ...
//!   + {json}         ... an insert-stream row
//!   - {json}         ... a remove-stream row
//! ```
//!
//! The outputs listed after an action (`t=` or an event) are exactly those
//! that action must produce, in order.

use fleetsql_pqa::{Clock, Engine, EngineConfig, Output, StatementId};
use serde_json::Value as J;

#[derive(Debug, Default, PartialEq, Clone)]
struct Out {
    time: i64,
    new: Vec<J>,
    old: Vec<J>,
}

#[derive(Debug)]
enum Action {
    Time(i64),
    Event(String, J),
}

#[derive(Debug, Default)]
struct Case {
    title: String,
    line: usize,
    setup: Vec<String>,
    epl: String,
    kernel: bool,
    error: Option<String>,
    /// Each action with the outputs it must produce.
    steps: Vec<(Action, usize, Vec<Out>)>,
}

fn parse(file: &str, text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    // Which statement text an indented line continues.
    let mut continuing: Option<bool> = None;
    for (n, raw) in text.lines().enumerate() {
        let n = n + 1;
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indented = line.len() != trimmed.len();
        let case = cases.last_mut();
        if let Some(rest) = trimmed.strip_prefix("case ") {
            cases.push(Case {
                title: rest.to_string(),
                line: n,
                ..Case::default()
            });
            continuing = None;
            continue;
        }
        let Some(case) = case else {
            panic!("{file}:{n}: text before the first 'case'");
        };
        if indented
            && let Some(setup) = continuing
            && !trimmed.starts_with('+')
            && !trimmed.starts_with('-')
        {
            let target = if setup {
                case.setup.last_mut().expect("setup")
            } else {
                &mut case.epl
            };
            target.push('\n');
            target.push_str(trimmed);
            continue;
        }
        continuing = None;
        if let Some(rest) = trimmed.strip_prefix("setup ") {
            case.setup.push(rest.to_string());
            continuing = Some(true);
        } else if let Some(rest) = trimmed.strip_prefix("epl ") {
            case.epl = rest.to_string();
            continuing = Some(false);
        } else if trimmed == "kernel" {
            case.kernel = true;
        } else if let Some(rest) = trimmed.strip_prefix("error ") {
            case.error = Some(rest.to_string());
        } else if let Some(rest) = trimmed.strip_prefix("t=") {
            let t = rest
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{file}:{n}: {e}"));
            case.steps.push((Action::Time(t), n, Vec::new()));
        } else if let Some(rest) = trimmed.strip_prefix("out ") {
            let t = rest
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{file}:{n}: {e}"));
            let Some(step) = case.steps.last_mut() else {
                panic!("{file}:{n}: 'out' before any action");
            };
            step.2.push(Out {
                time: t,
                ..Out::default()
            });
        } else if let Some(rest) = trimmed
            .strip_prefix('+')
            .map(|r| (r, true))
            .or_else(|| trimmed.strip_prefix('-').map(|r| (r, false)))
        {
            let (json, is_new) = rest;
            let v: J = serde_json::from_str(json.trim())
                .unwrap_or_else(|e| panic!("{file}:{n}: bad row: {e}"));
            let Some(out) = case.steps.last_mut().and_then(|s| s.2.last_mut()) else {
                panic!("{file}:{n}: row outside an 'out'");
            };
            if is_new {
                out.new.push(v);
            } else {
                out.old.push(v);
            }
        } else if let Some((stream, json)) = trimmed.split_once(' ') {
            let v: J = serde_json::from_str(json.trim())
                .unwrap_or_else(|e| panic!("{file}:{n}: bad event: {e}"));
            case.steps
                .push((Action::Event(stream.to_string(), v), n, Vec::new()));
        } else {
            panic!("{file}:{n}: cannot read '{trimmed}'");
        }
    }
    cases
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    General,
    Kernel,
    Batch,
}

fn collect(id: StatementId, outs: Vec<Output>) -> Vec<Out> {
    outs.into_iter()
        .filter(|o| o.statement == id)
        .map(|o| Out {
            time: o.time,
            new: o.rows.iter().map(|r| J::Object(r.to_json())).collect(),
            old: o.old.iter().map(|r| J::Object(r.to_json())).collect(),
        })
        .collect()
}

fn run(file: &str, case: &Case, mode: Mode) {
    let at = format!("{file}:{} '{}' ({mode:?})", case.line, case.title);
    let mut e = Engine::new(EngineConfig {
        timestamp_field: None,
        clock: Clock::Manual,
    });
    e.set_kernels(!matches!(mode, Mode::General));
    for s in &case.setup {
        e.register(s)
            .unwrap_or_else(|err| panic!("{at}: setup: {err}"));
    }
    let reg = e.register(&case.epl);
    if let Some(want) = &case.error {
        let err = match reg {
            Ok(_) => panic!("{at}: registered, expected an error containing '{want}'"),
            Err(err) => err.to_string(),
        };
        assert!(
            err.contains(want.as_str()),
            "{at}: error '{err}' lacks '{want}'"
        );
        return;
    }
    let id = reg
        .unwrap_or_else(|err| panic!("{at}: {err}"))
        .unwrap_or_else(|| panic!("{at}: the checked statement is a schema"));
    if case.kernel && !matches!(mode, Mode::General) {
        assert!(e.uses_kernel(id), "{at}: expected a kernel");
    }
    for (action, line, want) in &case.steps {
        let mut outs = Vec::new();
        match action {
            Action::Time(t) => e.advance_time_into(*t, &mut outs),
            Action::Event(stream, json) => match mode {
                Mode::Batch => {
                    let h = e.stream(stream);
                    let (batch, errors) = e.prepare_batch(h, std::slice::from_ref(json));
                    assert!(errors.is_empty(), "{at}:{line}: {errors:?}");
                    e.push_batch(&batch, &mut outs);
                }
                _ => e
                    .push_json_into(stream, json, &mut outs)
                    .unwrap_or_else(|err| panic!("{at}:{line}: {err}")),
            },
        }
        let got = collect(id, outs);
        assert_eq!(&got, want, "{at}: outputs after line {line}");
    }
}

#[test]
fn golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/golden")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "epl"))
        // PQA_GOLDEN=output.epl runs one file (to see it fail on its own).
        .filter(|p| {
            std::env::var("PQA_GOLDEN").map_or(true, |only| {
                p.file_name().is_some_and(|n| n.to_string_lossy() == only)
            })
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    let mut cases = 0;
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).expect("readable golden file");
        // PQA_GOLDEN_CASE=words runs only the cases whose title contains them
        // (to see one new case fail with its feature broken).
        let only_case = std::env::var("PQA_GOLDEN_CASE").ok();
        for case in parse(&name, &text) {
            if only_case
                .as_deref()
                .is_some_and(|w| !case.title.contains(w))
            {
                continue;
            }
            assert!(
                !case.epl.is_empty(),
                "{name}:{}: case without epl",
                case.line
            );
            for mode in [Mode::General, Mode::Kernel, Mode::Batch] {
                run(&name, &case, mode);
            }
            cases += 1;
        }
    }
    assert!(
        cases >= files.len() || (cases > 0 && std::env::var("PQA_GOLDEN_CASE").is_ok()),
        "{cases} cases in {} files",
        files.len()
    );
}
