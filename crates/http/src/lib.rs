//! fleetsql http
