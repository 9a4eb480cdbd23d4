//! Integration tests: one binary, real servers on ephemeral loopback ports.

mod support;

mod access_log;
mod admin;
mod config;
mod connect;
mod cors;
mod demo;
mod drain;
mod errors;
mod grpc;
mod grpc_web;
mod interop;
mod json;
mod matrix;
mod metrics;
mod private;
mod reload;
mod traces;
