//! cors tests
