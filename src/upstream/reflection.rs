//! Descriptors from gRPC server reflection (in progress).
