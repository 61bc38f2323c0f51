use crate::{ModelError, Result, origin};

/// The longest table or column name, in bytes (Postgres's `NAMEDATALEN - 1`).
pub const MAX_NAME_LEN: usize = 63;

/// Prefixes the SQL node owns: system tables, Postgres catalogs and history.
const RESERVED_TABLE_PREFIXES: [&str; 4] = ["fleet_", "pg_", "information_schema", "history"];

/// A table name is what a user types unquoted in SQL: lowercase ASCII letters,
/// digits and `_`, starting with a letter, at most 63 characters (as Postgres).
pub fn validate_table_name(name: &str) -> Result<()> {
    let fail = |reason: &str| {
        Err(ModelError::InvalidTableName {
            name: name.chars().take(80).collect(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return fail("the name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("names are at most 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return fail("a name starts with a lowercase letter a-z");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return fail("use only lowercase letters a-z, digits and `_`");
    }
    if let Some(prefix) = RESERVED_TABLE_PREFIXES
        .iter()
        .find(|p| name.starts_with(*p))
    {
        return fail(&format!(
            "names starting with `{prefix}` are reserved for fleetsql itself"
        ));
    }
    Ok(())
}

/// Column names may be anything printable but must not collide with the
/// origin columns the agent adds to every row.
pub fn validate_column_name(name: &str) -> Result<()> {
    let fail = |reason: &str| {
        Err(ModelError::InvalidColumnName {
            name: name.chars().take(80).collect(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return fail("the name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("names are at most 63 characters");
    }
    if origin::COLUMNS.contains(&name) {
        return fail("this origin column is added by the agent; rename the column");
    }
    if name.chars().any(|c| c.is_control()) {
        return fail("control characters are not allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert!(validate_table_name("processes").is_ok());
        assert!(validate_table_name("load_info2").is_ok());
        for bad in [
            "",
            "Sys",
            "1abc",
            "a-b",
            "fleet_nodes",
            "pg_class",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(validate_table_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn origin_columns_are_reserved() {
        assert!(validate_column_name("_host").is_err());
        assert!(validate_column_name("host").is_ok());
    }
}
