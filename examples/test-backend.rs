//! The integration tests' backend, on its own: `cargo run --example test-backend -- [ADDR]`
//! (default 127.0.0.1:50051). Serves `switchboard.testing.v1.TestService` and the annotated
//! `LibraryService` (REST rules) over h2c, with gRPC server reflection.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::net::SocketAddr;

#[path = "../tests/integration/support/backend.rs"]
mod backend;
#[path = "../tests/integration/support/library.rs"]
mod library;

mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("switchboard.testing.v1");
}

/// Aborts a task when dropped (the backend module expects it beside it).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "test backend (switchboard.testing.v1.TestService, LibraryService, reflection) on http://{}",
        listener.local_addr()?
    );
    backend::serve_with_reflection(listener).await;
    Ok(())
}
