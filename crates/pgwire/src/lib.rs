//! fleetsql pgwire
