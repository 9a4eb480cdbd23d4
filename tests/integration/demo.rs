//! demo tests
