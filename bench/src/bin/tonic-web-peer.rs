//! The Rust peer: the same service served in-process by tonic with `tonic_web::GrpcWebLayer`
//! (gRPC-Web binary and text, HTTP/1.1 and h2c). `tonic-web-peer ADDR`.

use switchboard_bench::{h2, runtime, service};

/// The same allocator as Switchboard, so allocation strategy is not what a comparison
/// measures.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned())
        .parse()?;
    runtime().block_on(async move {
        eprintln!("tonic-web-peer on http://{addr}");
        tonic::transport::Server::builder()
            .accept_http1(true)
            .initial_stream_window_size(h2::STREAM_WINDOW)
            .initial_connection_window_size(h2::CONN_WINDOW)
            .max_frame_size(h2::MAX_FRAME)
            .max_concurrent_streams(h2::MAX_STREAMS)
            .tcp_nodelay(true)
            .layer(tonic_web::GrpcWebLayer::new())
            .add_service(service::server())
            .serve(addr)
            .await
    })?;
    Ok(())
}
