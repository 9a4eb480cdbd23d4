//! matrix tests
