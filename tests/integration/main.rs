//! Integration tests: one binary, real servers on ephemeral loopback ports.

mod support;

mod browser_streams;
mod config;
mod connect;
mod cors;
mod demo;
mod deploy;
mod errors;
mod faults;
mod grpc;
mod grpc_web;
mod interop;
mod json;
mod matrix;
mod security;
mod upstreams;
mod websocket;
