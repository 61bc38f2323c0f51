//! Property test of report definitions (issue 17 item 7): random TOML and
//! mutations of the shipped report load or are refused, never a panic.

use std::path::Path;

use fleetsql_reports::ReportDefinition;
use proptest::prelude::*;

const REPORT: &str = include_str!("../../../demo/reports/continent_hits.toml");

const VALUES: &[&str] = &[
    "\"99999999999999999999999\"",
    "\"18446744073709551616s\"",
    "\"999999999999d\"",
    "\"0\"",
    "\"\"",
    "\"5 parsecs\"",
    "18446744073709551615",
    "1e308",
    "-1",
    "nan",
    "[]",
    "{}",
    "[\"\", \"\"]",
    "\"\\u0000\"",
];

fn mutated(value_line: usize, value: usize, cut: usize, insert: &str) -> String {
    let mut lines: Vec<String> = REPORT.lines().map(str::to_string).collect();
    let assignments: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].contains(" = ") && !lines[*i].ends_with("\"\"\""))
        .collect();
    if let Some(&i) = assignments.get(value_line % assignments.len().max(1)) {
        let key = lines[i].split(" = ").next().unwrap_or_default().to_string();
        lines[i] = format!("{key} = {}", VALUES[value % VALUES.len()]);
    }
    let text: Vec<char> = lines.join("\n").chars().collect();
    let at = cut % text.len().max(1);
    text[..at]
        .iter()
        .copied()
        .chain(insert.chars())
        .chain(text[at..].iter().copied())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_reports_load_or_are_refused(
        value_line in any::<usize>(),
        value in any::<usize>(),
        cut in any::<usize>(),
        insert in "[\\[\\]{}=\"'.,#a-z0-9\n ]{0,8}",
    ) {
        let _ = ReportDefinition::parse(Path::new("mutated.toml"), &mutated(value_line, value, cut, &insert));
    }

    #[test]
    fn random_text_is_refused(text in "\\PC{0,300}") {
        let _ = ReportDefinition::parse(Path::new("random.toml"), &text);
    }
}

#[test]
fn the_shipped_report_loads() {
    ReportDefinition::parse(Path::new("continent_hits.toml"), REPORT).expect("loads");
}
