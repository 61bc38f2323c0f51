//! fleetsql sim
