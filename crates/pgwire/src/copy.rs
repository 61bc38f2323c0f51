//! `COPY (SELECT ...) TO STDOUT` and `COPY table TO STDOUT`, in text and
//! CSV: what psql's `\copy ... TO 'file'` sends (psql writes the file on
//! the client) and what drivers use for bulk reads. The query inside runs
//! exactly as a simple query does (read-only check, pinned generation,
//! time-outs, completeness NOTICE); only its rows are written in COPY's
//! form. `COPY ... FROM`, and `COPY ... TO` a file or program on the
//! server, are refused: the node writes nothing and reads no client data.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::pgwire;
use fleetsql_sqlnode::SqlError;
use futures::StreamExt;
use pgwire::api::results::{CopyResponse, QueryResponse};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;
use pgwire::messages::data::DataRow;

use crate::hook::user_error;

/// How a `COPY ... TO STDOUT` writes its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyOptions {
    pub(crate) csv: bool,
    pub(crate) delimiter: u8,
    pub(crate) null: String,
    pub(crate) header: bool,
    pub(crate) quote: u8,
    pub(crate) escape: u8,
    /// Every non-NULL value quoted (`FORCE_QUOTE *`).
    pub(crate) force_quote_all: bool,
    /// Columns quoted whatever their value (`FORCE_QUOTE (a, b)`).
    pub(crate) force_quote: Vec<String>,
}

impl CopyOptions {
    fn text() -> CopyOptions {
        CopyOptions {
            csv: false,
            delimiter: b'\t',
            null: "\\N".to_string(),
            header: false,
            quote: b'"',
            escape: b'"',
            force_quote_all: false,
            force_quote: Vec::new(),
        }
    }

    /// CSV's defaults for what the statement did not set; Postgres changes
    /// the delimiter and NULL string with the format.
    fn into_csv(mut self, delimiter_set: bool, null_set: bool) -> CopyOptions {
        self.csv = true;
        if !delimiter_set {
            self.delimiter = b',';
        }
        if !null_set {
            self.null = String::new();
        }
        self
    }
}

/// A `COPY` statement as the node takes it.
#[derive(Debug)]
pub(crate) enum Copy {
    /// Rows of `query` to the client.
    Out { query: String, options: CopyOptions },
    /// A `COPY` the node does not run, with the error to answer.
    Refused(PgWireError),
}

/// `sql` as a `COPY`, when it is exactly one `COPY` statement.
pub(crate) fn parse(sql: &str) -> Option<Copy> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [statement] = statements.as_slice() else {
        return None;
    };
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    Some(copy(source, *to, target, options, legacy_options).unwrap_or_else(Copy::Refused))
}

fn copy(
    source: &CopySource,
    to: bool,
    target: &CopyTarget,
    options: &[CopyOption],
    legacy_options: &[CopyLegacyOption],
) -> PgWireResult<Copy> {
    if !to || matches!(target, CopyTarget::Stdin) {
        return Err(user_error(&SqlError::ReadOnly {
            statement: "COPY FROM".to_string(),
        }));
    }
    if !matches!(target, CopyTarget::Stdout) {
        return Err(error(
            "42501",
            "COPY to a file or program on the server is not allowed: use COPY ... TO STDOUT, or psql's \\copy, which writes the file on the client",
        ));
    }
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table {
            table_name,
            columns,
        } => format!(
            "SELECT {} FROM {table_name}",
            columns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Ok(Copy::Out {
        query,
        options: copy_options(options, legacy_options)?,
    })
}

fn copy_options(
    options: &[CopyOption],
    legacy_options: &[CopyLegacyOption],
) -> PgWireResult<CopyOptions> {
    let mut out = CopyOptions::text();
    let mut csv = false;
    let mut delimiter_set = false;
    let mut null_set = false;
    for option in options {
        match option {
            CopyOption::Format(name) => match name.value.to_lowercase().as_str() {
                "text" => csv = false,
                "csv" => csv = true,
                "binary" => return Err(binary()),
                other => {
                    return Err(error(
                        "22023",
                        &format!("COPY format \"{other}\" is unknown: use text or csv"),
                    ));
                }
            },
            CopyOption::Delimiter(c) => {
                out.delimiter = one_byte("DELIMITER", *c)?;
                delimiter_set = true;
            }
            CopyOption::Null(s) => {
                out.null = s.clone();
                null_set = true;
            }
            CopyOption::Header(h) => out.header = *h,
            CopyOption::Quote(c) => out.quote = one_byte("QUOTE", *c)?,
            CopyOption::Escape(c) => out.escape = one_byte("ESCAPE", *c)?,
            CopyOption::ForceQuote(columns) => force_quote(&mut out, columns),
            CopyOption::Encoding(e) if is_utf8(e) => {}
            other => return Err(unsupported(&other.to_string())),
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Binary => return Err(binary()),
            CopyLegacyOption::Csv(csv_options) => {
                csv = true;
                for option in csv_options {
                    match option {
                        CopyLegacyCsvOption::Header => out.header = true,
                        CopyLegacyCsvOption::Quote(c) => out.quote = one_byte("QUOTE", *c)?,
                        CopyLegacyCsvOption::Escape(c) => out.escape = one_byte("ESCAPE", *c)?,
                        CopyLegacyCsvOption::ForceQuote(columns) => force_quote(&mut out, columns),
                        other => return Err(unsupported(&other.to_string())),
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => {
                out.delimiter = one_byte("DELIMITER", *c)?;
                delimiter_set = true;
            }
            CopyLegacyOption::Null(s) => {
                out.null = s.clone();
                null_set = true;
            }
            CopyLegacyOption::Header => out.header = true,
            other => return Err(unsupported(&other.to_string())),
        }
    }
    Ok(if csv {
        out.into_csv(delimiter_set, null_set)
    } else {
        out
    })
}

fn force_quote(out: &mut CopyOptions, columns: &[datafusion::sql::sqlparser::ast::Ident]) {
    if columns.is_empty() || columns.iter().any(|c| c.value == "*") {
        out.force_quote_all = true;
    } else {
        out.force_quote
            .extend(columns.iter().map(|c| c.value.to_lowercase()));
    }
}

fn is_utf8(encoding: &str) -> bool {
    matches!(
        encoding.to_lowercase().replace(['-', '_'], "").as_str(),
        "utf8" | "unicode"
    )
}

fn one_byte(option: &str, c: char) -> PgWireResult<u8> {
    u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
        error(
            "22023",
            &format!("COPY {option} must be a single one-byte character, not '{c}'"),
        )
    })
}

fn binary() -> PgWireError {
    error(
        "0A000",
        "COPY in binary format is not supported: use FORMAT text or FORMAT csv",
    )
}

fn unsupported(option: &str) -> PgWireError {
    error(
        "0A000",
        &format!(
            "COPY option {option} is not supported; fleetsql's COPY TO STDOUT takes FORMAT, DELIMITER, NULL, HEADER, QUOTE, ESCAPE and FORCE_QUOTE"
        ),
    )
}

fn error(code: &str, message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.to_string(),
    )))
}

/// The rows of `answer` (encoded as text) as COPY data: one `CopyData`
/// per row, the header line (when asked for) before the first row so the
/// command tag counts rows only.
pub(crate) fn copy_out(answer: QueryResponse, options: CopyOptions) -> CopyResponse {
    let names: Vec<String> = answer
        .row_schema
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let quoted: Arc<Vec<bool>> = Arc::new(
        names
            .iter()
            .map(|n| options.force_quote_all || options.force_quote.contains(&n.to_lowercase()))
            .collect(),
    );
    let columns = names.len();
    let options = Arc::new(options);
    let header = options.header.then(|| {
        let mut line = BytesMut::new();
        let values: Vec<Option<&[u8]>> = names.iter().map(|n| Some(n.as_bytes())).collect();
        write_line(&mut line, &values, &options, &vec![false; columns]);
        line
    });
    let rows = answer.data_rows;
    // State: the rows still to read, the header not yet written, and
    // whether the answer ended (an error ends it too).
    let stream = futures::stream::unfold(
        (rows, header, false),
        move |(mut rows, mut header, ended)| {
            let options = options.clone();
            let quoted = quoted.clone();
            async move {
                if ended {
                    return None;
                }
                let Some(row) = rows.next().await else {
                    // An empty answer still has its header.
                    let line = header.take()?;
                    return Some((Ok(CopyData::new(line.freeze())), (rows, None, true)));
                };
                let row = match row {
                    Ok(row) => row,
                    Err(e) => return Some((Err(e), (rows, None, true))),
                };
                let mut line = header.take().unwrap_or_default();
                let Some(values) = fields(&row) else {
                    let e = error(
                        "XX000",
                        "internal error: a row of the answer could not be read back for COPY (a bug; see the node's log)",
                    );
                    return Some((Err(e), (rows, None, true)));
                };
                write_line(&mut line, &values, &options, &quoted);
                Some((Ok(CopyData::new(line.freeze())), (rows, None, false)))
            }
        },
    );
    CopyResponse::new(0, columns, stream)
}

/// A text-format `DataRow`'s fields: each a length (-1: NULL) and bytes.
fn fields(row: &DataRow) -> Option<Vec<Option<&[u8]>>> {
    let mut data: &[u8] = &row.data;
    let mut out = Vec::with_capacity(usize::try_from(row.field_count).unwrap_or(0));
    for _ in 0..row.field_count {
        let (length, rest) = data.split_first_chunk::<4>()?;
        let length = i32::from_be_bytes(*length);
        data = rest;
        if length < 0 {
            out.push(None);
            continue;
        }
        let (value, rest) = data.split_at_checked(usize::try_from(length).ok()?)?;
        out.push(Some(value));
        data = rest;
    }
    Some(out)
}

fn write_line(
    line: &mut BytesMut,
    values: &[Option<&[u8]>],
    options: &CopyOptions,
    quoted: &[bool],
) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            line.put_u8(options.delimiter);
        }
        match value {
            None => line.put_slice(options.null.as_bytes()),
            Some(value) if options.csv => write_csv(
                line,
                value,
                options,
                quoted.get(i).copied().unwrap_or(false),
            ),
            Some(value) => write_text(line, value, options.delimiter),
        }
    }
    line.put_u8(b'\n');
}

/// COPY's text format: backslash escapes for the characters that would
/// end a field or a line.
fn write_text(line: &mut BytesMut, value: &[u8], delimiter: u8) {
    for &byte in value {
        match byte {
            b'\\' => line.put_slice(b"\\\\"),
            b'\n' => line.put_slice(b"\\n"),
            b'\r' => line.put_slice(b"\\r"),
            b'\t' if delimiter == b'\t' => line.put_slice(b"\\t"),
            b if b == delimiter => {
                line.put_u8(b'\\');
                line.put_u8(b);
            }
            b => line.put_u8(b),
        }
    }
}

/// CSV as Postgres writes it: a value is quoted when it holds the
/// delimiter, the quote, the escape or a line break, when it equals the
/// NULL string (so an empty string and NULL stay apart), or when its
/// column is forced to be.
fn write_csv(line: &mut BytesMut, value: &[u8], options: &CopyOptions, forced: bool) {
    let needs_quotes = forced
        || value == options.null.as_bytes()
        || value.iter().any(|&b| {
            b == options.delimiter
                || b == options.quote
                || b == options.escape
                || b == b'\n'
                || b == b'\r'
        });
    if !needs_quotes {
        line.put_slice(value);
        return;
    }
    line.put_u8(options.quote);
    for &byte in value {
        if byte == options.quote || byte == options.escape {
            line.put_u8(options.escape);
        }
        line.put_u8(byte);
    }
    line.put_u8(options.quote);
}

/// A whole answer as COPY text, for tests.
#[cfg(test)]
fn lines(rows: &[Vec<Option<&str>>], options: &CopyOptions) -> bytes::Bytes {
    let mut out = BytesMut::new();
    for row in rows {
        let values: Vec<Option<&[u8]>> = row.iter().map(|v| v.map(str::as_bytes)).collect();
        write_line(&mut out, &values, options, &vec![false; values.len()]);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(sql: &str) -> (String, CopyOptions) {
        match parse(sql) {
            Some(Copy::Out { query, options }) => (query, options),
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn refused(sql: &str) -> ErrorInfo {
        match parse(sql) {
            Some(Copy::Refused(PgWireError::UserError(info))) => *info,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn what_psql_copy_sends_is_a_query_to_stdout() {
        let (query, options) = out("COPY ( SELECT hostname, ip FROM sys ) TO STDOUT");
        assert_eq!(query, "SELECT hostname, ip FROM sys");
        assert_eq!(options, CopyOptions::text());
        let (_, options) = out("COPY (SELECT 1) TO STDOUT with csv header");
        assert!(options.csv && options.header);
        assert_eq!((options.delimiter, options.null.as_str()), (b',', ""));
        let (_, options) =
            out("COPY (SELECT 1) TO STDOUT (FORMAT csv, HEADER, DELIMITER ';', NULL 'null')");
        assert_eq!((options.delimiter, options.null.as_str()), (b';', "null"));
        let (query, _) = out("COPY sys (hostname, ip) TO STDOUT");
        assert_eq!(query, "SELECT hostname, ip FROM sys");
        assert!(parse("SELECT 1").is_none());
        assert!(parse("COPY (SELECT 1) TO STDOUT; SELECT 1").is_none());
    }

    #[test]
    fn copy_from_and_server_files_are_refused() {
        let info = refused("COPY sys FROM STDIN");
        assert_eq!(info.code, "25006");
        assert!(info.message.contains("read-only"), "{}", info.message);
        assert_eq!(refused("COPY sys FROM '/tmp/x'").code, "25006");
        let info = refused("COPY (SELECT 1) TO '/etc/passwd'");
        assert_eq!(info.code, "42501");
        assert!(info.message.contains("\\copy"), "{}", info.message);
        assert_eq!(
            refused("COPY (SELECT 1) TO STDOUT (FORMAT binary)").code,
            "0A000"
        );
        assert_eq!(refused("COPY (SELECT 1) TO STDOUT BINARY").code, "0A000");
    }

    #[test]
    fn values_are_escaped_as_postgres_escapes_them() {
        let rows = vec![
            vec![Some("a\tb"), None, Some("back\\slash\nline")],
            vec![Some(""), Some("x"), Some("y")],
        ];
        assert_eq!(
            lines(&rows, &CopyOptions::text()),
            "a\\tb\t\\N\tback\\\\slash\\nline\n\tx\ty\n"
        );
        let csv = CopyOptions::text().into_csv(false, false);
        let rows = vec![vec![
            Some("a,b"),
            None,
            Some(""),
            Some("say \"hi\""),
            Some("plain"),
        ]];
        assert_eq!(
            lines(&rows, &csv),
            "\"a,b\",,\"\",\"say \"\"hi\"\"\",plain\n"
        );
    }
}
