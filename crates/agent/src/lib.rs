//! fleetsql agent
