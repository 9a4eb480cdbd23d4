//! Integration tests: one binary, real servers on ephemeral loopback ports.

mod support;

mod config;
mod connect;
mod cors;
mod demo;
mod errors;
mod grpc;
mod grpc_web;
mod interop;
mod json;
mod matrix;
mod rest;
mod rest_setup;
