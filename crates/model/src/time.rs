/// Milliseconds since the Unix epoch, UTC: the one clock every generation,
/// origin column and data age in fleetsql is stated in.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
