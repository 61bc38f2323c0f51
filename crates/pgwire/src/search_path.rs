//! Grafana's search-path subquery, answered before the protocol layer's
//! parse.
//!
//! Grafana's PostgreSQL data source lists tables (and their columns) with
//! `quote_ident(table_schema) IN (SELECT ... FROM generate_series(...) AS
//! i, string_to_array(current_setting('search_path'), ',') s)`: a table on
//! the search path is named unqualified, as Postgres names it. The
//! protocol layer's parser has that subquery on its blacklist and puts
//! `''` in its place, which matches no schema, so every table came back
//! schema-qualified (`public.sys`). The search path of a fleetsql session
//! is always `public` (what `current_setting('search_path')` and
//! `current_schemas(false)` answer), so the subquery's answer is known:
//! here it becomes `'public'` before the protocol layer sees the text.

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// The subquery as Grafana sends it (whitespace does not matter).
const SUBQUERY: &str = r#"SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s"#;

/// What it answers in every fleetsql session.
const SEARCH_PATH: &str = "'public'";

fn tokens(sql: &str) -> Option<Vec<TokenWithSpan>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    Some(
        tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect(),
    )
}

/// The byte offset of a 1-based line and column (in characters) of `sql`.
fn offset(sql: &str, at: Location) -> Option<usize> {
    let line_start = if at.line <= 1 {
        0
    } else {
        sql.match_indices('\n')
            .nth(usize::try_from(at.line).ok()? - 2)?
            .0
            + 1
    };
    let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
    let rest = &sql[line_start..];
    Some(
        line_start
            + rest
                .char_indices()
                .nth(column)
                .map_or(rest.len(), |(i, _)| i),
    )
}

/// `sql` with every copy of Grafana's search-path subquery replaced by
/// the search path it reads; `sql` itself when it has none (or does not
/// tokenize: the protocol layer then reports the error).
pub(crate) fn resolved(sql: &str) -> Cow<'_, str> {
    if !sql.contains("search_path") {
        return Cow::Borrowed(sql);
    }
    let (Some(pattern), Some(found)) = (tokens(SUBQUERY), tokens(sql)) else {
        return Cow::Borrowed(sql);
    };
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut i = 0;
    while i + pattern.len() <= found.len() {
        let matches = found[i..i + pattern.len()]
            .iter()
            .zip(&pattern)
            .all(|(a, b)| a.token == b.token);
        if !matches {
            i += 1;
            continue;
        }
        let start = offset(sql, found[i].span.start);
        let end = offset(sql, found[i + pattern.len() - 1].span.end);
        let (Some(start), Some(end)) = (start, end) else {
            return Cow::Borrowed(sql);
        };
        if start < copied || end < start {
            return Cow::Borrowed(sql);
        }
        out.push_str(&sql[copied..start]);
        out.push_str(SEARCH_PATH);
        copied = end;
        i += pattern.len();
    }
    if copied == 0 {
        return Cow::Borrowed(sql);
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafanas_subquery_becomes_the_search_path() {
        let sql = format!(
            "SELECT CASE WHEN quote_ident(table_schema) IN (\n{SUBQUERY}\n) THEN 1 END, 'é' FROM t ORDER BY CASE WHEN x IN ({}) THEN 0 END",
            SUBQUERY.replace('\n', " ")
        );
        let out = resolved(&sql);
        assert_eq!(
            out,
            "SELECT CASE WHEN quote_ident(table_schema) IN (\n'public'\n) THEN 1 END, 'é' FROM t ORDER BY CASE WHEN x IN ('public') THEN 0 END"
        );
    }

    #[test]
    fn other_sql_is_left_as_it_is() {
        let sql = "SELECT current_setting('search_path')";
        assert!(matches!(resolved(sql), Cow::Borrowed(_)));
        assert!(matches!(resolved("SELECT 1"), Cow::Borrowed(_)));
    }
}
