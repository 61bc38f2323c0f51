//! fleetsql sqlnode
