//! bench/RESULTS.md: machine, commands, one table per workload with ratios, and the targets.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use super::paired::{median_of, Paired};
use super::{Cell, Env, LoadOut, Server, Variant, VARIANTS};

/// What the machine was, when.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub date: String,
    pub cpu: String,
    pub nproc: usize,
    pub kernel: String,
    pub mem: String,
    pub loadavg: String,
    pub rustc: String,
    pub git: String,
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Machine {
    pub fn read(_env: &Env) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let dirty = !sh(&format!(
            "git -C {root} status --porcelain -- src Cargo.toml Cargo.lock"
        ))
        .is_empty();
        Machine {
            date: sh("date -u '+%Y-%m-%d %H:%M:%S UTC'"),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_else(|| "unknown".into()),
            nproc: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            mem: std::fs::read_to_string("/proc/meminfo")
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map(|kib| format!("{:.0} GiB", kib / 1048576.0))
                .unwrap_or_default(),
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            rustc: sh("rustc --version"),
            git: format!(
                "{}{}",
                sh(&format!("git -C {root} rev-parse --short HEAD")),
                if dirty {
                    " + uncommitted changes in src/"
                } else {
                    ""
                }
            ),
        }
    }
}

pub fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// One line for the progress output.
pub fn summary(o: &LoadOut) -> String {
    if !o.ok {
        return format!("FAILED: {}", o.error.as_deref().unwrap_or("?"));
    }
    format!(
        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, proxy {} s/1k calls{}",
        o.rps,
        o.p50_us / 1000.0,
        o.p99_us / 1000.0,
        cpu_per_1k(o, "proxy").map_or("—".into(), |c| format!("{c:.3}")),
        if o.errors > 0 {
            format!(", {} errors", o.errors)
        } else {
            String::new()
        }
    )
}

fn cpu_per_1k(o: &LoadOut, who: &str) -> Option<f64> {
    let cpu = *o.cpu_s.get(who)?;
    (o.calls > 0).then(|| cpu / o.calls as f64 * 1000.0)
}

fn cpu_per_gb(o: &LoadOut, who: &str, size: usize) -> Option<f64> {
    let cpu = *o.cpu_s.get(who)?;
    let gb = o.messages as f64 * size as f64 / 1e9;
    (gb > 0.0).then(|| cpu / gb)
}

/// Proxy RSS growth per open stream, KiB.
/// Seconds after a burst closed until the proxy's RSS was within 10 % of its level before
/// the burst (the first 250 ms sample at or under it), if it came back within the 5 s.
pub fn burst_recovery_secs(o: &LoadOut) -> Option<f64> {
    let before = *o.rss_before_kib.get("proxy")? as f64;
    o.rss_after_kib
        .iter()
        .position(|&k| k > 0 && (k as f64) <= before * 1.1)
        .map(|i| (i + 1) as f64 * 0.25)
}

pub fn idle_per_stream(o: &LoadOut, who: &str, streams: usize) -> Option<f64> {
    let before = *o.rss_before_kib.get(who)? as f64;
    let open = *o.rss_open_kib.get(who)? as f64;
    let n = if o.streams_open > 0 {
        o.streams_open
    } else {
        streams
    };
    Some((open - before) / n as f64)
}

fn mib(kib: Option<&u64>) -> String {
    kib.map_or("—".into(), |k| format!("{:.1}", *k as f64 / 1024.0))
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

fn sig3(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn variant(id: &str) -> &'static Variant {
    VARIANTS.iter().find(|v| v.id == id).expect("known variant")
}

/// The bare forwarder of the same HTTP version.
pub fn fwd_of(v: &Variant) -> &'static str {
    if v.http1 {
        "fwd-h1"
    } else {
        "fwd-h2"
    }
}

/// tonic-web on the nearest protocol and the same HTTP version.
fn tw_of(v: &Variant) -> Option<&'static str> {
    Some(match (v.wire, v.http1) {
        ("grpc", _) => return None,
        ("grpc-web-text", true) => "tw-text-h1",
        ("grpc-web-text", false) => "tw-text-h2",
        (_, true) => "tw-web-h1",
        (_, false) => "tw-web-h2",
    })
}

struct Cells<'a>(&'a [Cell]);

impl Cells<'_> {
    fn get(&self, workload: &str, size: usize, c: usize, id: &str) -> Option<&LoadOut> {
        self.0
            .iter()
            .find(|x| {
                x.workload == workload && x.size == size && x.concurrency == c && x.variant == id
            })
            .map(|x| &x.out)
            .filter(|o| o.ok)
    }
    /// Unary req/s over the bare forwarder: bracketed in the rounds when it was (see
    /// `Cell::vs_fwd`), else the ratio of the best rounds.
    fn vs_fwd(&self, size: usize, c: usize, v: &Variant) -> Option<f64> {
        let bracketed = self
            .0
            .iter()
            .find(|x| {
                x.workload == "unary" && x.size == size && x.concurrency == c && x.variant == v.id
            })
            .filter(|x| x.out.ok)
            .and_then(|x| x.vs_fwd);
        bracketed.or_else(
            || match (self.rps(size, c, v.id), self.rps(size, c, fwd_of(v))) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            },
        )
    }
    fn rps(&self, size: usize, c: usize, id: &str) -> Option<f64> {
        self.get("unary", size, c, id).map(|o| o.rps)
    }
    fn mbps_in(&self, workload: &str, size: usize, c: usize, id: &str) -> Option<f64> {
        self.get(workload, size, c, id).map(|o| o.mb_per_s)
    }
    /// Throughput ratio of `id` to `base` estimated from server CPU per call (or per GB): what
    /// the ratio would be if the server core were the only limit and entirely theirs.
    fn cpu_ratio(
        &self,
        workload: &str,
        size: usize,
        c: usize,
        id: &str,
        base: &str,
    ) -> Option<f64> {
        let stream = workload.starts_with("stream");
        let me = server_cpu_per_unit(self.get(workload, size, c, id)?, stream, size)?;
        let b = server_cpu_per_unit(self.get(workload, size, c, base)?, stream, size)?;
        Some(b / me)
    }
}

/// CPU seconds of every watched server process per call (unary) or per GB (stream).
fn server_cpu_per_unit(o: &LoadOut, stream: bool, size: usize) -> Option<f64> {
    let cpu: f64 = o.cpu_s.values().sum();
    let units = if stream {
        o.messages as f64 * size as f64 / 1e9
    } else {
        o.calls as f64
    };
    (o.ok && units > 0.0 && cpu > 0.0).then(|| cpu / units)
}

fn loadgen_busy(o: &LoadOut) -> f64 {
    if o.secs > 0.0 {
        o.loadgen_cpu_s / o.secs
    } else {
        0.0
    }
}

fn server_busy(o: &LoadOut) -> f64 {
    if o.secs > 0.0 {
        o.cpu_s.values().sum::<f64>() / o.secs
    } else {
        0.0
    }
}

fn other(o: &LoadOut) -> String {
    if o.secs > 0.0 {
        format!("{:.2}", o.other_cpu_s / o.secs)
    } else {
        "—".into()
    }
}

fn pct(x: f64, flag: bool) -> String {
    format!("{:.0}%{}", x * 100.0, if flag { " ‡" } else { "" })
}

#[allow(clippy::too_many_arguments)]
pub fn render(
    env: &Env,
    before: &Machine,
    after: &Machine,
    variants: &[&Variant],
    skipped: &[(&str, String)],
    cells: &[Cell],
    paired: &[Paired],
    elapsed: Duration,
) -> String {
    let o = &env.opts;
    let cs = Cells(cells);
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Switchboard benchmark results\n");
    let _ = writeln!(
        w,
        "Written by `bench/run.sh` (bench/src/bin/bench-run); rerun it to replace this file.\n"
    );
    // Shorter cells than the default (2 s) are a smoke run, `--quick` or not.
    if o.quick || o.duration < 2.0 {
        let _ = writeln!(
            w,
            "> **Smoke run** ({} s per cell after {} s of warm-up). Figures this short are rough; \
             use the full run for decisions.\n",
            o.duration, o.warmup
        );
    }
    let _ = writeln!(
        w,
        "Figures are ratios measured in one run on one machine; absolute numbers on a shared 2-core machine are noisy \
         (other work may have been running: see the load average and each cell's *other load*). Compare variants \
         within a table, not across runs.\n"
    );
    let _ = writeln!(w, "## Machine and run\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| date | {} |", before.date);
    let _ = writeln!(w, "| CPU | {} × {} |", before.nproc, before.cpu);
    let _ = writeln!(w, "| memory | {} |", before.mem);
    let _ = writeln!(w, "| kernel | Linux {} |", before.kernel);
    let _ = writeln!(
        w,
        "| load average (1/5/15 min) | {} before, {} after |",
        before.loadavg, after.loadavg
    );
    let _ = writeln!(
        w,
        "| toolchain | {} (release, thin LTO, codegen-units 1, for every program) |",
        before.rustc
    );
    let _ = writeln!(w, "| Switchboard | {} |", before.git);
    let _ = writeln!(w, "| run time | {:.0} s |", elapsed.as_secs_f64());
    let _ = writeln!(
        w,
        "| pinning | {} |",
        if env.pinned {
            format!(
                "load generator on core {}; every server (backend, forwarder, tonic-web peer, Switchboard) on core {} \
                 (`taskset -c`). Each tokio runtime then has one worker. The load generator never competes with \
                 what it measures, and every proxy shares its core with the backend in the same way; direct gRPC \
                 and tonic-web have that core to themselves",
                o.load_core, o.server_core
            )
        } else {
            "none (fewer than 2 cores, no taskset, or --no-pin)".to_owned()
        }
    );
    let _ = writeln!(
        w,
        "| allocator | Switchboard, the bare forwarder and the tonic-web peer: mimalloc with its defaults \
         (Switchboard's idle workers also ask it to return freed pages). bench-backend and the load generator: \
         the system allocator |"
    );
    let _ = writeln!(
        w,
        "| cells | {} s warm-up + {} s measured each, {}{}; unary payload {} and {} at concurrency {}; \
         stream: {} concurrent ServerStream calls of {} messages of {}; idle: {} streams on {} HTTP/2 connections |",
        o.warmup,
        o.duration,
        if o.repeat > 1 {
            format!(
                "{} rounds over all variants per cell, the best round of each variant kept (its req/s or MB/s, \
                 with the CPU and latency figures of that same round); in unary rounds each Switchboard variant \
                 is measured between two runs of its bare forwarder, for the ×fwd ratio",
                o.repeat
            )
        } else {
            "one round".to_owned()
        },
        if o.retries > 0 {
            format!(
                "; a measurement during which other processes used more than {} cores was taken again, up to {} \
                 more times, keeping the best",
                super::CALM,
                o.retries
            )
        } else {
            String::new()
        },
        size_name(o.small),
        size_name(o.large),
        o.concurrencies.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "),
        o.stream_concurrency,
        o.stream_count,
        size_name(o.stream_size),
        o.idle_streams,
        o.idle_conns
    );
    let _ = writeln!(
        w,
        "\nCommand: `{}`. Processes it started (ports are picked at random):\n",
        o.argv
    );
    let _ = writeln!(w, "```sh");
    for c in &env.commands {
        let _ = writeln!(w, "{c}");
    }
    let _ = writeln!(w, "```\n");
    let _ = writeln!(
        w,
        "Switchboard config (`RUST_LOG=warn`): one listener, the backend as the only upstream, the test service's \
         descriptor set for Connect JSON:\n\n```yaml\n{}```\n",
        super::switchboard_config(8080, 50051, std::path::Path::new("bench/target/bench-run/testing.binpb"))
    );
    let _ = writeln!(w, "Variants:\n");
    let _ = writeln!(w, "| id | what | server process |\n|---|---|---|");
    for v in variants {
        let server = match v.server {
            Server::Backend => "bench-backend (tonic)",
            Server::Forwarder => "forwarder → bench-backend",
            Server::TonicWeb => "tonic-web-peer (service in-process)",
            Server::Switchboard => "switchboard → bench-backend",
            Server::SwitchboardJwt => "switchboard (route with JWT auth) → bench-backend",
            Server::SwitchboardObserved => {
                "switchboard (metrics + JSON access log) → bench-backend"
            }
        };
        let _ = writeln!(w, "| `{}` | {} | {} |", v.id, v.label, server);
    }
    for (id, why) in skipped {
        let _ = writeln!(w, "\n**Skipped `{id}`**: its check call failed: {why}");
    }
    let _ = writeln!(
        w,
        "\nColumns: *proxy CPU* is user+system CPU of the proxy process (forwarder, tonic-web peer or Switchboard) \
         from /proc/PID/stat over the measured window, per 1,000 calls; *backend CPU* likewise for bench-backend; \
         *server core* is both together as a share of one core; *loadgen* is the load generator's own CPU share \
         (‡ = 90% or more: the load generator, not the server, may be the limit, so that figure is a lower bound); \
         *other load* is the CPU (in cores) that every other process on the machine used meanwhile, from /proc/stat: \
         a cell with a high one was disturbed by other work and its figures are less trustworthy. \
         Ratios: ×fwd = to the bare forwarder of the same HTTP version; in the unary tables it is bracketed: \
         each round measures that forwarder right before and right after the variant, the variant's req/s is \
         divided by the mean of those two, and the rounds' ratios are averaged, so the machine's speed drifting \
         between minutes (it does here, by a third and more) cancels out; req/s columns show each variant's \
         best round. ×direct = to direct gRPC, ×tonic-web = to \
         tonic-web on the same protocol and HTTP version (gRPC-Web binary for Connect). Above 1 is faster. \
         *by CPU* ratios divide the baseline's server CPU per call (or per GB) by the variant's: the throughput \
         ratio to expect if the server core were the only limit and wholly theirs. They are much less sensitive \
         to other work on the machine than measured throughput, so use them to track tuning on a busy machine.\n"
    );

    let matrix: Vec<&&Variant> = variants.iter().filter(|v| v.matrix).collect();
    if cells.iter().any(|c| c.workload == "unary") {
        let _ = writeln!(w, "## Unary\n");
        for size in [o.small, o.large] {
            for &c in &o.concurrencies {
                let _ = writeln!(
                    w,
                    "### Unary, {} messages, concurrency {c}\n",
                    size_name(size)
                );
                let _ = writeln!(
                    w,
                    "| variant | req/s | p50 ms | p99 ms | proxy CPU s/1k calls | backend CPU s/1k calls | server core | loadgen | other load | ×fwd | ×fwd by CPU | ×direct | ×tonic-web | errors |"
                );
                let _ = writeln!(
                    w,
                    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
                );
                for v in &matrix {
                    let cell = cells.iter().find(|x| {
                        x.workload == "unary"
                            && x.size == size
                            && x.concurrency == c
                            && x.variant == v.id
                    });
                    let Some(cell) = cell else { continue };
                    let out = &cell.out;
                    if !out.ok {
                        let _ = writeln!(
                            w,
                            "| `{}` | failed: {} | | | | | | | | | | | | {} |",
                            v.id,
                            out.error.as_deref().unwrap_or("?").replace('|', "/"),
                            out.errors
                        );
                        continue;
                    }
                    let me = Some(out.rps);
                    let _ = writeln!(
                        w,
                        "| `{}` | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        v.id,
                        thousands(out.rps),
                        out.p50_us / 1000.0,
                        out.p99_us / 1000.0,
                        cpu_per_1k(out, "proxy").map_or("—".into(), sig3),
                        cpu_per_1k(out, "backend").map_or("—".into(), sig3),
                        pct(server_busy(out), false),
                        pct(loadgen_busy(out), loadgen_busy(out) >= 0.9),
                        other(out),
                        cs.vs_fwd(size, c, v).map_or("—".into(), |r| format!("{r:.2}×")),
                        cs.cpu_ratio("unary", size, c, v.id, fwd_of(v)).map_or("—".into(), |r| format!("{r:.2}×")),
                        ratio(me, cs.rps(size, c, "direct")),
                        tw_of(v).map_or("—".into(), |t| ratio(me, cs.rps(size, c, t))),
                        out.errors
                    );
                }
                let _ = writeln!(w);
            }
        }
    }

    super::paired::section(w, paired, &size_name(o.small));

    if cells.iter().any(|c| c.workload == "stream") {
        let _ = writeln!(
            w,
            "## Server streaming\n\n{} concurrent `ServerStream` calls, each {} messages of {} sent as fast as the \
             transport takes them; MB/s counts message payload (10^6 bytes/s) received by the load generator, \
             whatever the encoding (base64 for text, JSON for Connect JSON).\n\n\
             ### Proxy on the backend's core\n\n\
             Every server on core {}, the load generator on core {}. Every byte then costs that one core the \
             backend's work plus the proxy's (one more receive and one more send through the kernel), so the best \
             any proxy can reach is backend CPU per GB ÷ (backend + proxy CPU per GB) of direct gRPC. The bare \
             forwarder, which translates nothing, shows that ceiling; compare Switchboard with it (×fwd, and proxy \
             CPU s/GB) to see what translation costs.\n",
            o.stream_concurrency,
            o.stream_count,
            size_name(o.stream_size),
            o.server_core,
            o.load_core,
        );
        stream_table(w, o, &cs, cells, &matrix, "stream");
    }
    if cells.iter().any(|c| c.workload == "stream-apart") {
        let _ = writeln!(
            w,
            "### Proxy on a core of its own\n\n\
             The same calls with the backend and the load generator sharing core {} and the proxy alone on \
             core {}, as a proxy on its own host or CPU would run (tonic-web has no backend, so it is not in this \
             table). Direct gRPC does the same backend and client work on core {}, so ×direct says whether the \
             proxy keeps up with what the backend can send and the client can take. The server-streaming target \
             is judged here.\n",
            o.load_core, o.server_core, o.load_core
        );
        stream_table(w, o, &cs, cells, &matrix, "stream-apart");
    }

    if cells.iter().any(|c| c.workload == "idle") {
        let _ = writeln!(
            w,
            "## Idle open streams\n\n{} `ServerStream` calls over HTTP/2 ({} connections), each answered with one \
             100 B message and then left open (the backend waits an hour before the next). RSS is VmRSS from \
             /proc/PID/status: *before* after one warm-up call per connection, *open* 1 s after the last stream got \
             its message, *closed* 1 s after the load generator reset them all. Each proxy process is started fresh \
             for this (the backend is not, so its own figure shrinks from row to row as its allocator reuses memory). \
             The tonic-web peer holds the service's streams in-process (no backend). RSS after closing stays high \
             where the allocator keeps freed memory (the baselines' mimalloc defaults, the backend's glibc); it is \
             not a leak by itself.\n",
            o.idle_streams, o.idle_conns
        );
        let _ = writeln!(
            w,
            "| variant | streams open | opened in s | RSS before MiB | RSS open MiB | **KiB per stream** | RSS closed MiB | proxy threads | backend KiB per stream | errors |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for c in cells.iter().filter(|c| c.workload == "idle") {
            let out = &c.out;
            let note = if out.ok {
                String::new()
            } else {
                format!(
                    " ({})",
                    out.error.as_deref().unwrap_or("?").replace('|', "/")
                )
            };
            let _ = writeln!(
                w,
                "| `{}`{} | {} | {:.1} | {} | {} | **{}** | {} | {} | {} | {} |",
                c.variant,
                note,
                out.streams_open,
                out.open_secs,
                mib(out.rss_before_kib.get("proxy")),
                mib(out.rss_open_kib.get("proxy")),
                idle_per_stream(out, "proxy", c.concurrency)
                    .map_or("—".into(), |k| format!("{k:.1}")),
                mib(out.rss_closed_kib.get("proxy")),
                out.threads_open
                    .get("proxy")
                    .map_or("—".into(), |t| t.to_string()),
                idle_per_stream(out, "backend", c.concurrency)
                    .map_or("—".into(), |k| format!("{k:.1}")),
                out.errors
            );
        }
        let _ = writeln!(w);
    }

    if cells.iter().any(|c| c.workload == "burst") {
        let _ = writeln!(
            w,
            "## Memory after a burst\n\nA fresh proxy takes a burst and then goes quiet: 2,000 HTTP/2 \
             `ServerStream` calls left open (`sb-web-h2`), or 1,000 HTTP/1.1 connections that each make one \
             unary call and stay open until all have (`sb-web-h1`). Then everything is closed and the proxy's \
             VmRSS is read every 250 ms for 5 s. Target: back within 10 % of its level before the burst \
             within 5 s.\n"
        );
        let _ = writeln!(
            w,
            "| variant | burst | RSS before MiB | RSS open MiB | RSS 1 s after MiB | RSS 5 s after MiB | back within 10 % after | errors |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|");
        for c in cells.iter().filter(|c| c.workload == "burst") {
            let out = &c.out;
            let back = burst_recovery_secs(out);
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
                c.variant,
                c.concurrency,
                mib(out.rss_before_kib.get("proxy")),
                mib(out.rss_open_kib.get("proxy")),
                mib(out.rss_closed_kib.get("proxy")),
                mib(out.rss_after_kib.last()),
                back.map_or("not within 5 s".into(), |s| format!("{s:.2} s")),
                out.errors
            );
        }
        let _ = writeln!(w);
    }

    if cells.iter().any(|c| c.workload == "h2load") {
        let _ = writeln!(
            w,
            "## Cross-check with h2load\n\nThe small unary cell at concurrency 16 driven by h2load (Debian \
             nghttp2-client, one thread, pinned like bench-load; it checks HTTP status only) right after \
             bench-load's last round on the same variant, to show bench-load is not what limits the figures \
             (a ratio near or above 1). HTTP/2: `-c 4 -m 4`; HTTP/1.1: `--h1 -c 16 -m 1`. One h2load run against \
             bench-load's best round, so expect noise.\n"
        );
        let _ = writeln!(w, "| variant | h2load req/s | bench-load req/s | bench-load / h2load |\n|---|--:|--:|--:|");
        for c in cells.iter().filter(|c| c.workload == "h2load") {
            let ours = cs.rps(o.small, 16, c.variant);
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} |",
                c.variant,
                c.h2load_rps.map_or("failed".into(), thousands),
                ours.map_or("—".into(), thousands),
                ratio(ours, c.h2load_rps)
            );
        }
        let _ = writeln!(w);
    }

    if cells.iter().any(|c| c.workload == "bidi") {
        bidi_table(w, cells);
    }

    render_targets(w, o, &cs, cells, paired);
    md
}

/// One table of server-streaming results (`workload` is `stream` or `stream-apart`).
fn stream_table(
    w: &mut String,
    o: &super::Opts,
    cs: &Cells<'_>,
    cells: &[Cell],
    matrix: &[&&Variant],
    workload: &str,
) {
    let (size, c) = (o.stream_size, o.stream_concurrency);
    let _ = writeln!(
        w,
        "| variant | MB/s | proxy CPU s/GB | backend CPU s/GB | server core | loadgen | other load | ×direct | ×direct by CPU | ×fwd | ×tonic-web | errors |"
    );
    let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for v in matrix {
        let Some(cell) = cells
            .iter()
            .find(|x| x.workload == workload && x.variant == v.id)
        else {
            continue;
        };
        let out = &cell.out;
        if !out.ok {
            let _ = writeln!(
                w,
                "| `{}` | failed: {} | | | | | | | | | | {} |",
                v.id,
                out.error.as_deref().unwrap_or("?").replace('|', "/"),
                out.errors
            );
            continue;
        }
        let me = Some(out.mb_per_s);
        let tw = tw_of(v).filter(|_| workload == "stream");
        let _ = writeln!(
            w,
            "| `{}` | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            v.id,
            out.mb_per_s,
            cpu_per_gb(out, "proxy", size).map_or("—".into(), sig3),
            cpu_per_gb(out, "backend", size).map_or("—".into(), sig3),
            pct(server_busy(out), false),
            pct(loadgen_busy(out), loadgen_busy(out) >= 0.9),
            other(out),
            ratio(me, cs.mbps_in(workload, size, c, "direct")),
            // With the proxy on its own core, CPU summed over both cores says nothing of the
            // throughput ratio.
            cs.cpu_ratio(workload, size, c, v.id, "direct")
                .filter(|_| workload == "stream")
                .map_or("—".into(), |r| format!("{r:.2}×")),
            ratio(me, cs.mbps_in(workload, size, c, fwd_of(v))),
            tw.map_or("—".into(), |t| ratio(
                me,
                cs.mbps_in(workload, size, c, t)
            )),
            out.errors
        );
    }
    let _ = writeln!(w);
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

fn render_targets(
    w: &mut String,
    o: &super::Opts,
    cs: &Cells<'_>,
    cells: &[Cell],
    paired: &[Paired],
) {
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(
        w,
        "Judged on the measured figure; *by CPU* is the same ratio estimated from server CPU per call or per GB \
         (see the legend above), for a second opinion when the machine was busy.\n"
    );
    let _ = writeln!(
        w,
        "| target | cell | measured | by CPU | threshold | result |\n|---|---|--:|--:|--:|---|"
    );
    let mut total = 0;
    let mut good = 0;
    let mut row = |w: &mut String,
                   target: &str,
                   cell: String,
                   value: Option<f64>,
                   by_cpu: Option<f64>,
                   unit: &str,
                   ok: Option<bool>| {
        // A threshold of "—" marks a comparison row: shown, not counted.
        let comparison = unit == "—";
        if !comparison {
            total += 1;
        }
        if ok == Some(true) {
            good += 1;
        }
        let _ = writeln!(
            w,
            "| {target} | {cell} | {} | {} | {unit} | {} |",
            value.map_or("—".into(), |v| format!("{v:.2}")),
            by_cpu.map_or("—".into(), |v| format!("{v:.2}")),
            if comparison { "comparison" } else { met(ok) }
        );
    };
    let has = |wl: &str| cells.iter().any(|c| c.workload == wl);
    if has("unary") {
        for id in [
            "sb-web-h1",
            "sb-web-h2",
            "sb-text-h1",
            "sb-text-h2",
            "sb-connect-proto-h1",
        ] {
            if !cells
                .iter()
                .any(|c| c.workload == "unary" && c.variant == id)
            {
                continue;
            }
            let v = variant(id);
            for size in [o.small, o.large] {
                for c in [16, 256] {
                    if !o.concurrencies.contains(&c) {
                        continue;
                    }
                    let r = cs.vs_fwd(size, c, v);
                    row(
                        w,
                        "unary req/s ≥ 0.9× bare forwarder",
                        format!("`{id}` vs `{}`, {}, c{c}", fwd_of(v), size_name(size)),
                        r,
                        cs.cpu_ratio("unary", size, c, id, fwd_of(v)),
                        "≥ 0.90×",
                        r.map(|r| r >= 0.9),
                    );
                }
            }
        }
        // JWT auth (ES256, the token verified once and then cached): proxy CPU per call over the
        // same protocol without auth.
        for (jwt, plain) in [
            ("sb-web-h1-jwt", "sb-web-h1"),
            ("sb-connect-proto-h1-jwt", "sb-connect-proto-h1"),
        ] {
            for &c in &o.concurrencies {
                let per_call = |id: &str| {
                    cs.get("unary", o.small, c, id)
                        .and_then(|x| cpu_per_1k(x, "proxy"))
                };
                // The paired median when measured (see `paired`), else the best rounds'.
                let (r, how) = match median_of(paired, jwt, plain, c) {
                    Some(m) => (Some(m), "paired median"),
                    None => match (per_call(jwt), per_call(plain)) {
                        (Some(a), Some(b)) => ((b > 0.0).then(|| a / b), "best rounds"),
                        _ => continue,
                    },
                };
                row(
                    w,
                    "JWT auth proxy CPU per call ≤ 1.1× without auth",
                    format!("`{jwt}` vs `{plain}`, {}, c{c} ({how})", size_name(o.small)),
                    r,
                    None,
                    "≤ 1.10×",
                    r.map(|r| r <= 1.1),
                );
            }
        }
        // Metrics and the access log together: proxy CPU per unary call against the same
        // variant without them, both measured in this run.
        for v in VARIANTS
            .iter()
            .filter(|v| v.server == Server::SwitchboardObserved)
        {
            let Some(plain) = super::unobserved_of(v.id) else {
                continue;
            };
            for &c in &o.concurrencies {
                let per = |id: &str| {
                    cs.get("unary", o.small, c, id)
                        .and_then(|x| cpu_per_1k(x, "proxy"))
                };
                let (r, how) = match median_of(paired, v.id, plain, c) {
                    Some(m) => (Some(m), "paired median"),
                    None => match (per(v.id), per(plain)) {
                        (Some(a), Some(b)) if b > 0.0 => (Some(a / b), "best rounds"),
                        _ => continue,
                    },
                };
                row(
                    w,
                    "metrics + access log proxy CPU per unary call ≤ 1.05× without",
                    format!(
                        "`{}` vs `{plain}`, {}, c{c} ({how})",
                        v.id,
                        size_name(o.small)
                    ),
                    r,
                    None,
                    "≤ 1.05×",
                    r.map(|r| r <= 1.05),
                );
            }
        }
        let both = ["sb-connect-json-h1", "sb-connect-proto-h1"]
            .iter()
            .all(|id| {
                cells
                    .iter()
                    .any(|c| c.workload == "unary" && c.variant == *id)
            });
        for &c in o.concurrencies.iter().filter(|_| both) {
            let json = cs
                .get("unary", o.small, c, "sb-connect-json-h1")
                .and_then(|x| cpu_per_1k(x, "proxy"));
            let proto = cs
                .get("unary", o.small, c, "sb-connect-proto-h1")
                .and_then(|x| cpu_per_1k(x, "proxy"));
            let r = match (json, proto) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            row(
                w,
                "Connect JSON proxy CPU per call ≤ 1.5× Connect proto",
                format!("{}, c{c}", size_name(o.small)),
                r,
                None,
                "≤ 1.50×",
                r.map(|r| r <= 1.5),
            );
        }
        // REST GET of the same small message as Connect JSON's POST (a comparison, not a
        // target: the figure is what matching a rule and building the message from the URL
        // cost against parsing a JSON body).
        let rest = ["sb-rest-h1", "sb-connect-json-h1"].iter().all(|id| {
            cells
                .iter()
                .any(|c| c.workload == "unary" && c.variant == *id)
        });
        for &c in o.concurrencies.iter().filter(|_| rest) {
            let per = |id: &str| {
                cs.get("unary", o.small, c, id)
                    .and_then(|x| cpu_per_1k(x, "proxy"))
            };
            let r = match (per("sb-rest-h1"), per("sb-connect-json-h1")) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            row(
                w,
                "REST GET proxy CPU per call ÷ Connect JSON (comparison)",
                format!("{}, c{c}", size_name(o.small)),
                r,
                None,
                "—",
                None,
            );
        }
    }
    // Judged with the proxy on a core of its own when that was measured; with the proxy on
    // the backend's core, the bare forwarder's own ratio is the ceiling (shown below the table).
    let judged = if has("stream-apart") {
        "stream-apart"
    } else {
        "stream"
    };
    let mut shared_core_notes = Vec::new();
    if has(judged) {
        for v in VARIANTS
            .iter()
            .filter(|v| v.server.is_switchboard() && v.matrix)
        {
            if !cells
                .iter()
                .any(|c| c.workload == judged && c.variant == v.id)
            {
                continue;
            }
            let (size, c) = (o.stream_size, o.stream_concurrency);
            let of = |wl: &str, id: &str| cs.mbps_in(wl, size, c, id);
            let r = match (of(judged, v.id), of(judged, "direct")) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let fwd = match (of(judged, fwd_of(v)), of(judged, "direct")) {
                (Some(a), Some(b)) if b > 0.0 => format!(" (bare forwarder: {:.2}×)", a / b),
                _ => String::new(),
            };
            let layout = if judged == "stream-apart" {
                ", proxy on its own core"
            } else {
                ""
            };
            row(
                w,
                "server-stream MB/s ≥ 0.8× direct gRPC",
                format!("`{}`{layout}{fwd}", v.id),
                r,
                cs.cpu_ratio(judged, size, c, v.id, "direct")
                    .filter(|_| judged == "stream"),
                "≥ 0.80×",
                r.map(|r| r >= 0.8),
            );
            if v.wire == "connect-json" || v.wire == "rest" {
                // JSON streams of 64 KiB `bytes` messages against the bare forwarder.
                let r = match (of(judged, v.id), of(judged, fwd_of(v))) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                // By CPU: with the proxy on a core of its own, its CPU per GB bounds its
                // throughput; on the backend's core, both processes' CPU per GB do.
                let by_cpu = if judged == "stream-apart" {
                    let per_gb = |id: &str| {
                        cs.get(judged, size, c, id)
                            .and_then(|x| cpu_per_gb(x, "proxy", size))
                    };
                    match (per_gb(fwd_of(v)), per_gb(v.id)) {
                        (Some(f), Some(me)) if me > 0.0 => Some(f / me),
                        _ => None,
                    }
                } else {
                    cs.cpu_ratio(judged, size, c, v.id, fwd_of(v))
                };
                row(
                    w,
                    "JSON server-stream MB/s ≥ 0.5× bare forwarder",
                    format!("`{}` vs `{}`{layout}", v.id, fwd_of(v)),
                    r,
                    by_cpu,
                    "≥ 0.50×",
                    r.map(|r| r >= 0.5),
                );
            }
            if judged == "stream-apart" {
                if let (Some(a), Some(d), Some(f)) = (
                    of("stream", v.id),
                    of("stream", "direct"),
                    of("stream", fwd_of(v)),
                ) {
                    shared_core_notes.push(format!(
                        "`{}` {:.2}× direct (bare forwarder {:.2}×, so {:.2}× of that ceiling)",
                        v.id,
                        a / d,
                        f / d,
                        a / f
                    ));
                }
            }
        }
    }
    if has("idle") {
        for c in cells.iter().filter(|c| c.workload == "idle") {
            if !variant(c.variant).server.is_switchboard() {
                continue;
            }
            let per = if c.out.ok {
                idle_per_stream(&c.out, "proxy", c.concurrency)
            } else {
                None
            };
            row(
                w,
                "proxy RSS per idle open stream ≤ 8 KiB",
                format!("`{}`", c.variant),
                per,
                None,
                "≤ 8.00 KiB",
                per.map(|k| k <= 8.0),
            );
        }
    }
    if has("burst") {
        for c in cells.iter().filter(|c| c.workload == "burst") {
            let back = burst_recovery_secs(&c.out);
            row(
                w,
                "RSS back within 10 % of before a burst, within 5 s",
                format!("`{}` ({} open)", c.variant, c.concurrency),
                back,
                None,
                "≤ 5.00 s",
                Some(back.is_some_and(|s| s <= 5.0)),
            );
        }
    }
    let _ = writeln!(w, "\n{good} of {total} target rows met.");
    if !shared_core_notes.is_empty() {
        let _ = writeln!(
            w,
            "\nServer streaming with the proxy on the backend's core (not judged; the bare forwarder's \
             ratio is the ceiling there): {}.",
            shared_core_notes.join("; ")
        );
    }
}

/// Bidi echo over a WebSocket versus a Connect stream over HTTP/2.
fn bidi_table(w: &mut String, cells: &[Cell]) {
    let _ = writeln!(
        w,
        "## Bidi echo: WebSocket versus Connect over HTTP/2\n\nThe same `TestService/Bidi` on the same backend \
         through Switchboard, as a browser would hold it: `sb-ws-h1` is improbable-eng's WebSocket transport \
         (`grpc-websockets`, one HTTP/1.1 upgrade per conversation), `sb-connect-proto-h2` a Connect stream \
         (`application/connect+proto`) over HTTP/2, one connection per conversation. Each conversation sends a \
         100 B message only when the echo of the previous one is back, so a message's round trip is its \
         latency and messages per second is conversations ÷ round trip.\n"
    );
    let _ = writeln!(
        w,
        "| variant | conversations | **messages/s** | p50 round trip µs | p99 round trip µs | proxy CPU µs per message | errors |"
    );
    let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|");
    for c in cells.iter().filter(|c| c.workload == "bidi") {
        let out = &c.out;
        let per_msg = out
            .cpu_s
            .get("proxy")
            .filter(|_| out.calls > 0)
            .map_or("—".into(), |s| {
                format!("{:.1}", s * 1e6 / out.calls as f64)
            });
        let note = if out.ok {
            String::new()
        } else {
            format!(
                " ({})",
                out.error.as_deref().unwrap_or("?").replace('|', "/")
            )
        };
        let _ = writeln!(
            w,
            "| `{}`{} | {} | **{}** | {:.0} | {:.0} | {} | {} |",
            c.variant,
            note,
            c.concurrency,
            thousands(out.rps),
            out.p50_us,
            out.p99_us,
            per_msg,
            out.errors
        );
    }
    let _ = writeln!(w);
}
