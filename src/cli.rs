//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Lets browsers and HTTP/1.1 clients call gRPC services: accepts gRPC-Web (binary and text)
/// and native gRPC, and forwards native gRPC over HTTP/2 to backends.
///
/// Run from a YAML file with --config, or in quick mode with --listen and --upstream.
/// New here? `switchboard demo` starts a demo service and a web page that calls it.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without a command, run the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Run from this YAML config file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "upstream", "allow_origin", "admin", "descriptors"])]
    pub config: Option<PathBuf>,

    /// Quick mode: the address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR", requires = "upstream")]
    pub listen: Option<SocketAddr>,

    /// Quick mode: the backend every call goes to: http://host:port (h2c) or https://host:port.
    #[arg(long, value_name = "URL", requires = "listen")]
    pub upstream: Option<String>,

    /// Quick mode: an origin browsers may call from (repeat for more; * for any).
    /// Without it no cross-origin call is allowed.
    #[arg(long = "allow-origin", value_name = "ORIGIN", requires = "upstream")]
    pub allow_origin: Vec<String>,

    /// Quick mode: serve the admin endpoints (health, readiness, metrics) on this address,
    /// e.g. 127.0.0.1:9901.
    #[arg(long, value_name = "ADDR", requires = "upstream")]
    pub admin: Option<SocketAddr>,

    /// Quick mode: a descriptor set for JSON transcoding (`buf build -o`, `protoc
    /// --include_imports --descriptor_set_out`); without it the backend's server reflection is
    /// used when it offers it.
    #[arg(long, value_name = "FILE", requires = "upstream")]
    pub descriptors: Option<PathBuf>,

    /// Log format on stderr. Filter with RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file and the files it names; exit non-zero on error.
    Check {
        /// The YAML config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the demo: a gRPC service, the proxy and a web page that calls it, on one port.
    ///
    /// The page calls the embedded demo service through the proxy in every protocol (Connect
    /// JSON and proto, gRPC-Web binary and text). Open the printed URL in a browser; Ctrl-C
    /// stops it.
    Demo {
        /// Where to serve the page and the proxy.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Probe a running proxy's admin port: one HTTP GET, exit 0 on a 2xx answer and 1
    /// otherwise. For container health checks (the image has no curl).
    Healthcheck {
        /// What to GET (plain HTTP).
        #[arg(long, value_name = "URL", default_value = crate::healthcheck::DEFAULT_URL)]
        url: String,
        /// The longest the whole probe may take (e.g. 500ms, 2s).
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::config::units::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
