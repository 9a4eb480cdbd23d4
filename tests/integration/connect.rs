//! Connect protocol tests
