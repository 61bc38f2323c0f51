/// Milliseconds since the Unix epoch, UTC: the one clock every generation,
/// origin column and data age in fleetsql is stated in.
///
/// `FLEETSQL_TEST_CLOCK_OFFSET_MS` (tests only) shifts this clock by that
/// many milliseconds for the whole process, standing in for a machine whose
/// clock is wrong (the fault tests' clock skew; no faketime needed). Read
/// once; an unparsable value is ignored.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() + test_clock_offset_ms()
}

fn test_clock_offset_ms() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("FLEETSQL_TEST_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}
