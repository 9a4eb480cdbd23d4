//! interop tests
