//! Integration tests: one binary, real servers on ephemeral loopback ports.

mod support;

mod access_log;
mod admin;
mod browser_streams;
mod config;
mod connect;
mod cors;
mod demo;
mod deploy;
mod drain;
mod errors;
mod faults;
mod grpc;
mod grpc_web;
mod interop;
mod json;
mod matrix;
mod metrics;
mod private;
mod reload;
mod rest;
mod rest_setup;
mod security;
mod traces;
mod upstreams;
mod websocket;
