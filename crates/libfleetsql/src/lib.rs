//! `libfleetsql`: the C-compatible publisher library (`include/fleetsql.h`).
//!
//! A table is collected in memory as CSV and sent with one HTTP/1.1 request
//! to the local agent's loopback publish API (`POST /v1/tables/{name}`).
//! The client is plain `std::net`, with no runtime or TLS: the agent only
//! listens on loopback, and a C caller should not inherit a thread pool.
//! The same functions are usable from Rust ([`Table`], [`publish`]).

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The agent's default publish address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7070";

/// A table being built.
#[derive(Debug, Clone)]
pub struct Table {
    name: String,
    columns: usize,
    csv: String,
    rows: usize,
}

fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn push_record<'a>(out: &mut String, values: impl Iterator<Item = &'a str>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, v);
    }
    out.push('\n');
}

impl Table {
    /// A table named `name` with these columns.
    pub fn new(name: &str, columns: &[&str]) -> Result<Table, String> {
        if name.is_empty() || columns.is_empty() {
            return Err("a table needs a name and at least one column".into());
        }
        let mut csv = String::new();
        push_record(&mut csv, columns.iter().copied());
        Ok(Table {
            name: name.to_string(),
            columns: columns.len(),
            csv,
            rows: 0,
        })
    }

    /// Appends one row (as many values as columns).
    pub fn add_row(&mut self, values: &[&str]) -> Result<(), String> {
        if values.len() != self.columns {
            return Err(format!(
                "row has {} values but table `{}` has {} columns",
                values.len(),
                self.name,
                self.columns
            ));
        }
        push_record(&mut self.csv, values.iter().copied());
        self.rows += 1;
        Ok(())
    }

    /// Rows added.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

fn resolve_addr(addr: Option<&str>) -> String {
    addr.map(str::to_string)
        .or_else(|| std::env::var("FLEETSQL_PUBLISH").ok())
        .unwrap_or_else(|| DEFAULT_ADDR.to_string())
}

fn request(
    method: &str,
    addr: &str,
    table: &str,
    publisher: Option<&str>,
    body: &str,
) -> Result<(), String> {
    if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`{table}` is not a table name (letters, digits, _)"
        ));
    }
    let mut stream = TcpStream::connect(addr)
        .map_err(|e| format!("cannot reach the fleetsql agent at {addr}: {e}; is it running?"))?;
    let timeout = Some(Duration::from_secs(30));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let mut head = format!(
        "{method} /v1/tables/{table} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/csv\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(p) = publisher {
        if p.contains(['\r', '\n']) {
            return Err("the publisher name must be one line".into());
        }
        head.push_str(&format!("X-Fleetsql-Publisher: {p}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| format!("sending to the agent at {addr}: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("reading the agent's answer: {e}"))?;
    let status: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("the agent at {addr} did not answer HTTP"))?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    Err(format!("the agent refused ({status}): {body}"))
}

/// Publishes `table` to the agent at `addr` (default: `$FLEETSQL_PUBLISH`
/// or [`DEFAULT_ADDR`]) as `publisher`.
pub fn publish(table: &Table, addr: Option<&str>, publisher: Option<&str>) -> Result<(), String> {
    request(
        "POST",
        &resolve_addr(addr),
        &table.name,
        publisher,
        &table.csv,
    )
}

/// Withdraws `publisher`'s rows of `table`.
pub fn withdraw(table: &str, addr: Option<&str>, publisher: Option<&str>) -> Result<(), String> {
    request("DELETE", &resolve_addr(addr), table, publisher, "")
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn fail(message: String) -> c_int {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
    -1
}

fn done(result: Result<(), String>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn text<'a>(p: *const c_char) -> Result<Option<&'a str>, String> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller promises a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map(Some)
        .map_err(|_| "text must be UTF-8".to_string())
}

/// # Safety
/// `items` points to `n` NULL-or-NUL-terminated strings.
unsafe fn texts<'a>(items: *const *const c_char, n: usize) -> Result<Vec<&'a str>, String> {
    if items.is_null() {
        return Err("NULL array".into());
    }
    (0..n)
        // SAFETY: the caller promises `n` valid entries.
        .map(|i| unsafe { text(*items.add(i)) }.map(Option::unwrap_or_default))
        .collect()
}

/// See `fleetsql.h`.
///
/// # Safety
/// `name` is a C string and `columns` points to `ncolumns` C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fleetsql_table_new(
    name: *const c_char,
    columns: *const *const c_char,
    ncolumns: usize,
) -> *mut Table {
    // SAFETY: forwarded caller promises.
    let made = unsafe { text(name) }.and_then(|name| {
        let columns = unsafe { texts(columns, ncolumns) }?;
        Table::new(name.unwrap_or_default(), &columns)
    });
    match made {
        Ok(t) => Box::into_raw(Box::new(t)),
        Err(e) => {
            fail(e);
            std::ptr::null_mut()
        }
    }
}

/// See `fleetsql.h`.
///
/// # Safety
/// `table` came from `fleetsql_table_new`; `values` points to as many C
/// strings (or NULLs) as the table has columns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fleetsql_table_add_row(
    table: *mut Table,
    values: *const *const c_char,
) -> c_int {
    // SAFETY: the caller passes a live table or NULL.
    let Some(table) = (unsafe { table.as_mut() }) else {
        return fail("NULL table".into());
    };
    // SAFETY: forwarded caller promise.
    done(unsafe { texts(values, table.columns) }.and_then(|v| table.add_row(&v)))
}

/// See `fleetsql.h`.
///
/// # Safety
/// `table` came from `fleetsql_table_new` or is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fleetsql_table_rows(table: *const Table) -> usize {
    // SAFETY: the caller passes a live table or NULL.
    unsafe { table.as_ref() }.map_or(0, Table::rows)
}

/// See `fleetsql.h`.
///
/// # Safety
/// `table` came from `fleetsql_table_new`; `addr` and `publisher` are C strings or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fleetsql_publish(
    table: *const Table,
    addr: *const c_char,
    publisher: *const c_char,
) -> c_int {
    // SAFETY: the caller passes a live table or NULL.
    let Some(table) = (unsafe { table.as_ref() }) else {
        return fail("NULL table".into());
    };
    // SAFETY: forwarded caller promises.
    done(unsafe { text(addr) }.and_then(|addr| {
        let publisher = unsafe { text(publisher) }?;
        publish(table, addr, publisher)
    }))
}

/// See `fleetsql.h`.
///
/// # Safety
/// All arguments are C strings or NULL (`name` must not be NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fleetsql_withdraw(
    name: *const c_char,
    addr: *const c_char,
    publisher: *const c_char,
) -> c_int {
    // SAFETY: forwarded caller promises.
    done(unsafe { text(name) }.and_then(|name| {
        let name = name.ok_or("NULL table name")?;
        let addr = unsafe { text(addr) }?;
        let publisher = unsafe { text(publisher) }?;
        withdraw(name, addr, publisher)
    }))
}

/// See `fleetsql.h`.
///
/// # Safety
/// `table` came from `fleetsql_table_new` and is not used afterwards, or is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fleetsql_table_free(table: *mut Table) {
    if !table.is_null() {
        // SAFETY: made by Box::into_raw in fleetsql_table_new.
        drop(unsafe { Box::from_raw(table) });
    }
}

/// See `fleetsql.h`.
#[unsafe(no_mangle)]
pub extern "C" fn fleetsql_last_error() -> *const c_char {
    // The pointer stays valid until this thread's next failing call.
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let mut t = Table::new("t", &["a", "b"]).unwrap();
        t.add_row(&["x,y", "say \"hi\""]).unwrap();
        assert_eq!(t.csv, "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n");
        assert!(t.add_row(&["only one"]).is_err());
        assert!(Table::new("", &["a"]).is_err());
    }

    #[test]
    fn unreachable_agent_is_explained() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let t = Table::new("t", &["a"]).unwrap();
        let e = publish(&t, Some(&port.to_string()), None).unwrap_err();
        assert!(e.contains("is it running?"), "{e}");
        assert!(publish(&Table::new("bad-name", &["a"]).unwrap(), None, None).is_err());
    }
}
