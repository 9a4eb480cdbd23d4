//! The `switchboard` binary: parse the command line, load the config, run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use switchboard::cli::{Cli, Command, LogFormat};
use switchboard::config::Config;

/// mimalloc: per-call allocations (request state, header maps, task cells) are small and
/// short-lived, and it serves them from thread-local pages without glibc's bin management
/// (measured: about a fifth less proxy CPU per small unary call than the system allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often freed memory may be handed back to the OS after calls were made.
const COLLECT_INTERVAL: Duration = Duration::from_millis(500);
/// Collect rounds after the last call: the memory of connections that close later goes too.
const COLLECT_ROUNDS: u32 = 4;

/// Hands the freed memory of the calling thread's heap back to the OS.
#[allow(unsafe_code)]
fn collect_this_thread() {
    // SAFETY: `mi_collect` takes no pointers; it frees and purges what this thread's heap no
    // longer uses, and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Returns the memory of finished calls to the OS once the proxy goes quiet. mimalloc keeps
/// freed memory in the heap of the thread that allocated it and returns it only when that
/// thread calls into it again, so a worker that goes to sleep after a burst would keep the
/// burst's memory for good. Every interval after calls were made (and a few intervals more,
/// for connections that close later), a collect task is sent to each worker: each one holds
/// its worker for a moment, so the next lands on another. Purging on every free instead
/// (`purge_delay` 0) costs an `madvise` and page faults per large message, which halved
/// streaming throughput; collecting at every park costs a heap walk per park under load.
async fn collect_after_calls(workers: usize) {
    let mut tick = tokio::time::interval(COLLECT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rounds_left = 0;
    loop {
        tick.tick().await;
        if switchboard::activity::take() {
            rounds_left = COLLECT_ROUNDS;
        }
        if rounds_left == 0 {
            continue;
        }
        rounds_left -= 1;
        let round: Vec<_> = (0..workers)
            .map(|_| {
                tokio::spawn(async {
                    collect_this_thread();
                    std::thread::sleep(Duration::from_millis(1));
                })
            })
            .collect();
        for task in round {
            let _ = task.await;
        }
    }
}

/// The tokio runtime of `run` and `demo`: one worker per core.
fn runtime() -> std::io::Result<(tokio::runtime::Runtime, usize)> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .on_thread_park(switchboard::access_log::on_worker_park)
        .enable_all()
        .build()?;
    Ok((rt, workers))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a file or a log collector.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Healthcheck { url, timeout }) = &cli.command {
        let status = switchboard::healthcheck::probe(url, *timeout)?;
        println!("{url}: {status}");
        return Ok(());
    }
    if let Some(Command::Demo { listen }) = cli.command {
        return run_demo(listen);
    }
    if let Some(Command::Check { config }) = cli.command {
        let c = Config::load(&config)?;
        switchboard::server::check(&c).map_err(anyhow::Error::msg)?;
        println!(
            "{}: ok ({} listener(s), {} upstream(s), {} route(s))",
            config.display(),
            c.listeners.len(),
            c.upstreams.len(),
            c.routes.len()
        );
        return Ok(());
    }
    let config = match (cli.config, cli.listen, cli.upstream) {
        (Some(path), _, _) => Config::load(&path)?,
        (None, Some(listen), Some(upstream)) => {
            let mut c = Config::quick(listen, &upstream, cli.allow_origin)?;
            c.admin = cli
                .admin
                .map(|address| switchboard::config::Admin { address });
            if let (Some(path), Some(u)) = (cli.descriptors, c.upstreams.first_mut()) {
                std::sync::Arc::make_mut(u).json.descriptors = Some(path);
            }
            switchboard::server::check(&c).map_err(anyhow::Error::msg)?;
            c
        }
        _ => anyhow::bail!(
            "nothing to run: pass --config FILE, or --listen ADDR --upstream URL (see --help)"
        ),
    };
    let (runtime, workers) = runtime()?;
    let ran = runtime.block_on(async {
        tokio::spawn(collect_after_calls(workers));
        let stop = shutdown_signal();
        // Before anything is bound: from the first "listening" line on, SIGHUP reloads and
        // never terminates the process (its default action).
        let hangups = hangup_signal();
        let running = switchboard::spawn(config).await?;
        let control = running.control().clone();
        tokio::spawn(reload_on_hangup(hangups, control.clone()));
        // SIGTERM/SIGINT, or POST /drain on the admin port.
        tokio::select! {
            () = stop => {}
            () = control.drain_requested() => {}
        }
        tracing::info!("shutting down: draining open calls");
        control.drain().await;
        Ok(())
    });
    // The workers hand over their last access log lines as they stop; then they are written.
    drop(runtime);
    switchboard::access_log::flush_all();
    ran
}

/// Listens for SIGHUP from now on (none where there are no signals, or it cannot be had).
#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<()> {
    None
}

/// SIGHUP reloads the config file; it never stops the process (in quick mode there is
/// nothing to reload, and that is logged).
#[cfg(unix)]
async fn reload_on_hangup(
    hangups: Option<tokio::signal::unix::Signal>,
    control: std::sync::Arc<switchboard::server::Control>,
) {
    let Some(mut hangups) = hangups else {
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        // Logged (with the file, line and key when refused) and counted by the reload.
        let _ = control.reload().await;
    }
}

#[cfg(not(unix))]
async fn reload_on_hangup(_: Option<()>, _: std::sync::Arc<switchboard::server::Control>) {}

/// `switchboard demo`: the demo service, the proxy and the page until Ctrl-C.
fn run_demo(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let (runtime, workers) = runtime()?;
    runtime.block_on(async {
        tokio::spawn(collect_after_calls(workers));
        // Listening for Ctrl-C before the URL is out, so an early one is not lost.
        let stop = shutdown_signal();
        let demo = switchboard::demo::spawn(listen).await?;
        println!(
            "Switchboard demo: open {} in your browser (Ctrl-C stops it)",
            demo.url()
        );
        stop.await;
        tracing::info!("shutting down the demo");
        demo.shutdown().await;
        Ok(())
    })
}

/// Listens for SIGINT (Ctrl-C) and SIGTERM from now on, so a signal that arrives before the
/// returned future is first polled is not lost; the future resolves on the first one.
/// Call it inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
