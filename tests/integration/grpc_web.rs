//! grpc_web tests
