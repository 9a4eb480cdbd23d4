//! Paired measurements of what one stage costs per call: a variant and the same variant
//! without the stage, each driven by its own load generator *at the same time* (same
//! concurrency, same calls), several times over; each pair gives one ratio of proxy CPU per
//! call, and the median of those ratios is the figure.
//!
//! Why at the same time: the machine's speed drifts by a third and more from minute to minute,
//! and even between runs seconds apart (other work on the host). That swamps a cost of a few
//! per cent when two variants are measured apart, as the unary rounds do. Two processes measured
//! over the same seconds, on the same core, see the same machine: whatever slows one slows the
//! other. Each takes its share of the core, so the figure is CPU per call, not throughput.

use std::fmt::Write as _;

use serde::Serialize;

use super::{load_args, note_command, pids_arg, progress, secs_limit, Env, Servers, Variant};

/// The stages measured in pairs: the variant with the stage, the one without, what it is.
pub const PAIRS: &[(&str, &str, &str)] = &[
    ("sbo-web-h1", "sb-web-h1", "metrics + access log"),
    ("sbo-web-h2", "sb-web-h2", "metrics + access log"),
    ("sbo-grpc-h2", "sb-grpc-h2", "metrics + access log"),
    ("sb-web-h1-jwt", "sb-web-h1", "JWT auth"),
    ("sb-connect-proto-h1-jwt", "sb-connect-proto-h1", "JWT auth"),
];

/// The ratios of one stage at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    pub variant: &'static str,
    pub baseline: &'static str,
    pub what: &'static str,
    pub concurrency: usize,
    /// Proxy CPU per call with the stage over without, one per pair, in the order measured.
    pub ratios: Vec<f64>,
}

impl Paired {
    /// The median ratio.
    pub fn median(&self) -> Option<f64> {
        let mut r = self.ratios.clone();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => None,
            n if n % 2 == 1 => Some(r[n / 2]),
            n => Some((r[n / 2 - 1] + r[n / 2]) / 2.0),
        }
    }

    /// The lowest and highest ratio.
    fn range(&self) -> Option<(f64, f64)> {
        let lo = self.ratios.iter().copied().min_by(f64::total_cmp)?;
        let hi = self.ratios.iter().copied().max_by(f64::total_cmp)?;
        Some((lo, hi))
    }
}

/// How many pairs per stage and concurrency.
pub fn pairs(quick: bool, repeat: usize) -> usize {
    if quick {
        3
    } else {
        (4 * repeat).max(5)
    }
}

/// Measures every pair whose two variants are both in the run, with small unary calls at each
/// concurrency of the run.
pub fn measure(env: &mut Env, servers: &Servers, variants: &[&'static Variant]) -> Vec<Paired> {
    let find = |id: &str| variants.iter().copied().find(|v| v.id == id);
    let opts = env.opts.clone();
    let n = pairs(opts.quick, opts.repeat);
    let mut out = Vec::new();
    for &(with, without, what) in PAIRS {
        let (Some(a), Some(b)) = (find(with), find(without)) else {
            continue;
        };
        for &c in &opts.concurrencies {
            let mut ratios = Vec::with_capacity(n);
            for k in 0..n {
                let (Some((pa, proxy_a, _)), Some((pb, proxy_b, _))) =
                    (servers.of(a), servers.of(b))
                else {
                    break;
                };
                // Only each proxy's own CPU: the backend serves both.
                let args_a = load_args(
                    a,
                    pa,
                    "unary",
                    opts.small,
                    c,
                    &opts,
                    &pids_arg(proxy_a, None),
                );
                let args_b = load_args(
                    b,
                    pb,
                    "unary",
                    opts.small,
                    c,
                    &opts,
                    &pids_arg(proxy_b, None),
                );
                // Which one starts first alternates.
                let ((oa, la), (ob, _)) = if k % 2 == 0 {
                    env.load_together(args_a, args_b, secs_limit(&opts))
                } else {
                    let (b_out, a_out) = env.load_together(args_b, args_a, secs_limit(&opts));
                    (a_out, b_out)
                };
                note_command(env, "paired", &la);
                let per_call = |o: &super::LoadOut| {
                    let cpu = o.cpu_s.get("proxy").copied()?;
                    (o.ok && o.calls > 0).then(|| cpu / o.calls as f64)
                };
                if let (Some(with), Some(base)) = (per_call(&oa), per_call(&ob)) {
                    if base > 0.0 {
                        ratios.push(with / base);
                    }
                }
            }
            let p = Paired {
                variant: a.id,
                baseline: b.id,
                what,
                concurrency: c,
                ratios,
            };
            progress(&format!(
                "paired {} vs {} c{c}: median {} over {} pairs",
                a.id,
                b.id,
                p.median().map_or("?".into(), |m| format!("{m:.3}")),
                p.ratios.len()
            ));
            out.push(p);
        }
    }
    out
}

/// The report's section: every pair's median and range.
pub fn section(w: &mut String, paired: &[Paired], small: &str) {
    if paired.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## Stage costs, paired\n\nProxy CPU per unary call ({small} messages) of a variant over the same variant without \
         one stage, the two driven at the same time by two load generators (each at the concurrency shown), on the \
         same core; each pair gives one ratio, and the median is the figure. Measured together because the \
         machine's speed drifts too much, even between runs seconds apart, for a cost of a few per cent to show \
         in runs measured apart (see `bench/src/bin/bench-run/paired.rs`).\n"
    );
    let _ = writeln!(
        w,
        "| stage | variant | without | concurrency | pairs | median | lowest – highest |\n|---|---|---|--:|--:|--:|--:|"
    );
    for p in paired {
        let _ = writeln!(
            w,
            "| {} | `{}` | `{}` | {} | {} | {} | {} |",
            p.what,
            p.variant,
            p.baseline,
            p.concurrency,
            p.ratios.len(),
            p.median().map_or("—".into(), |m| format!("{m:.3}×")),
            p.range()
                .map_or("—".into(), |(lo, hi)| format!("{lo:.3} – {hi:.3}"))
        );
    }
    let _ = writeln!(w);
}

/// The paired median of `variant` over `baseline` at `c`, when measured.
pub fn median_of(paired: &[Paired], variant: &str, baseline: &str, c: usize) -> Option<f64> {
    paired
        .iter()
        .find(|p| p.variant == variant && p.baseline == baseline && p.concurrency == c)
        .and_then(Paired::median)
}
