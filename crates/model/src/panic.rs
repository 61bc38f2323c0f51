//! What a caught panic said, for the log line of the front end that caught
//! it (HTTP, Postgres, Flight): every front end answers its client an
//! error and goes on serving.

use std::any::Any;

/// The panic's message, when it carried one.
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_both_kinds_of_panic() {
        let formatted = std::panic::catch_unwind(|| panic!("row {}", 7)).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "row 7");
        let literal = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "plain");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(panic_message(other.as_ref()), "(no message)");
    }
}
