//! The benchmark backend: `switchboard.testing.v1.TestService` (see `service.rs`) served by a
//! default tonic server over h2c. `bench-backend ADDR`.
//!
//! It allows a very large number of concurrent streams per connection, because proxies in
//! front of it (the bare forwarder uses a single connection) multiplex 10,000 idle streams.

use switchboard_bench::{h2, runtime, service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".to_owned())
        .parse()?;
    runtime().block_on(async move {
        eprintln!("bench-backend on http://{addr}");
        tonic::transport::Server::builder()
            .initial_stream_window_size(h2::STREAM_WINDOW)
            .initial_connection_window_size(h2::CONN_WINDOW)
            .max_frame_size(h2::MAX_FRAME)
            .max_concurrent_streams(1_000_000)
            .tcp_nodelay(true)
            .add_service(service::server())
            .serve(addr)
            .await
    })?;
    Ok(())
}
