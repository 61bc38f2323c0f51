//! Which `SET`s a client may run.
//!
//! Every client of a node shares one DataFusion session, so a DataFusion
//! setting set by one (`datafusion.runtime.memory_limit`, the batch size,
//! the parser dialect, the time zone) would change every other client's
//! queries and could lift the limits that keep the node up. Those are set
//! in the node's configuration; a client's own settings (`statement_timeout`,
//! `application_name`, `DateStyle`, ...) are kept per connection by the
//! Postgres front end.

use datafusion::sql::sqlparser::ast::{ObjectName, Set, Statement};

use crate::{Result, SqlError};

/// Refuses a `SET` that would change the session every client shares.
pub fn check_setting(statement: &Statement) -> Result<()> {
    let Statement::Set(set) = statement else {
        return Ok(());
    };
    match set {
        Set::SingleAssignment { variable, .. } => check_name(variable),
        Set::ParenthesizedAssignments { variables, .. } => {
            variables.iter().try_for_each(check_name)
        }
        Set::MultipleAssignments { assignments } => {
            assignments.iter().try_for_each(|a| check_name(&a.name))
        }
        Set::SetTimeZone { .. } => Err(shared("TIME ZONE")),
        _ => Ok(()),
    }
}

fn check_name(name: &ObjectName) -> Result<()> {
    let text = name.to_string().to_lowercase();
    // DataFusion reads `timezone` as `datafusion.execution.time_zone`.
    if text.starts_with("datafusion.") || text == "timezone" || text == "time.zone" {
        return Err(shared(&text));
    }
    Ok(())
}

fn shared(name: &str) -> SqlError {
    SqlError::SharedSetting {
        name: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn check(sql: &str) -> Result<()> {
        check_setting(&Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0])
    }

    #[test]
    fn node_wide_settings_are_refused_and_session_ones_pass() {
        for refused in [
            "SET datafusion.runtime.memory_limit = '100G'",
            "SET DataFusion.Execution.batch_size = 1",
            "SET datafusion.sql_parser.dialect = 'mysql'",
            "SET TIME ZONE 'Europe/Berlin'",
            "SET timezone = 'UTC'",
        ] {
            let err = check(refused).unwrap_err();
            assert!(matches!(err, SqlError::SharedSetting { .. }), "{refused}");
            assert!(err.to_string().contains("every client"), "{err}");
        }
        for allowed in [
            "SET statement_timeout = 1000",
            "SET application_name = 'grafana'",
            "SET extra_float_digits = 3",
            "SELECT 1",
        ] {
            assert!(check(allowed).is_ok(), "{allowed}");
        }
    }
}
