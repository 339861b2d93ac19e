//! Translation latency by AutoMoE's protocol (`automoe::decode::latency`: batch 1, a 30-token
//! source, the encoder once plus 30 decoder steps at beam 5, 5 warm-up runs, 20 timed runs with
//! the top and bottom 10 % dropped), for subnets of the small space and the smallest and largest
//! subnets of the WMT space (random weights: the work does not depend on them, since exactly 30
//! steps are forced); then batch translation throughput.
//!
//! Run: `cargo bench --bench translate_latency`. Thread counts: `AUTOMOE_BENCH_THREADS=1,2`
//! (default: 1 and all of rayon's). `AUTOMOE_BENCH_SKIP_WMT=1` leaves out the WMT space (its
//! supernet holds ~1.3 GB of f32 weights).

use std::time::Instant;

use automoe::data::tokenizer::EOS_ID;
use automoe::decode::{measure, translate_ids, LatencyProtocol, SearchOptions};
use automoe::model::{flop_report, ModelOptions, ModelView, Routing, SearchSpace, SubnetConfig, Supernet};
use automoe::rng::seeded;
use automoe::DType;
use rand::Rng;

/// Joined BPE vocabularies of the two settings (Multi30k-sized and WMT'14-sized).
const SMALL_VOCAB: usize = 8000;
const WMT_VOCAB: usize = 32000;

fn space(name: &str) -> SearchSpace {
    SearchSpace::from_toml_file(format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"))).expect("space file")
}

/// The cheapest subnet of a space: smallest of every gene, dense layers, span -1.
fn smallest(s: &SearchSpace) -> SubnetConfig {
    let min = |l: &[usize]| l.iter().copied().min().unwrap_or(1);
    let mut c = s.largest();
    c.encoder_embed_dim = min(&s.encoder_embed_dim);
    c.decoder_embed_dim = min(&s.decoder_embed_dim);
    c.decoder.truncate(min(&s.decoder_layers));
    c.encoder.truncate(min(&s.encoder_layers));
    let w = min(&s.ffn_widths);
    for l in &mut c.encoder {
        (l.self_heads, l.experts, l.expert_widths) = (min(&s.encoder_heads), 1, vec![w]);
    }
    for l in &mut c.decoder {
        (l.self_heads, l.cross_heads, l.cross_span) = (min(&s.decoder_self_heads), min(&s.decoder_cross_heads), -1);
        (l.experts, l.expert_widths) = (1, vec![w]);
    }
    c
}

fn describe(c: &SubnetConfig) -> String {
    let experts: Vec<String> =
        c.encoder.iter().map(|l| l.experts).chain(c.decoder.iter().map(|l| l.experts)).map(|e| e.to_string()).collect();
    format!("{}L/{}L d{}/{} experts {}", c.encoder.len(), c.decoder.len(), c.encoder_embed_dim, c.decoder_embed_dim, experts.join(""))
}

fn thread_counts() -> Vec<usize> {
    match std::env::var("AUTOMOE_BENCH_THREADS") {
        Ok(s) => s.split(',').filter_map(|t| t.trim().parse().ok()).filter(|&t| t > 0).collect(),
        Err(_) => {
            let all = rayon::current_num_threads();
            if all > 1 {
                vec![1, all]
            } else {
                vec![1]
            }
        }
    }
}

fn latency_rows(label: &str, view: &ModelView, vocab: usize, threads: &[usize]) {
    let cfg = view.config();
    let gflops = flop_report(cfg, vocab, 30, 30, &Routing::Uniform).map(|f| f.paper_gflops()).unwrap_or(f64::NAN);
    for &t in threads {
        let proto = LatencyProtocol { threads: Some(t), ..LatencyProtocol::default() };
        match measure(view, &proto) {
            Ok(r) => println!(
                "| {label} | {} | {gflops:.2} | {} | {:.1} | {:.1} | {:.1} |",
                describe(cfg),
                r.threads,
                r.encoder_ms,
                r.decoder_ms,
                r.total_ms
            ),
            Err(e) => println!("| {label} | {} | {gflops:.2} | {t} | error: {e} | | |", describe(cfg)),
        }
    }
}

/// Sentences per second translating `n` random sources of 10–30 tokens in batches of 32, beam 4.
fn throughput(label: &str, view: &ModelView, n: usize) {
    let mut rng = seeded(42);
    let v = view.vocab() as u32;
    let sources: Vec<Vec<u32>> = (0..n)
        .map(|_| {
            let len = rng.random_range(10..=30);
            let mut s: Vec<u32> = (0..len - 1).map(|_| rng.random_range(4..v)).collect();
            s.push(EOS_ID);
            s
        })
        .collect();
    let opts = SearchOptions::default();
    let start = Instant::now();
    let mut out_tokens = 0usize;
    for chunk in sources.chunks(32) {
        let hyps = translate_ids(view, chunk, &opts).expect("translate");
        out_tokens += hyps.iter().map(|h| h.tokens.len() + 1).sum::<usize>();
    }
    let s = start.elapsed().as_secs_f64();
    println!("| {label} | {} | {n} | {:.1} | {:.1} | {:.0} |", describe(view.config()), s, n as f64 / s, out_tokens as f64 / s);
}

fn main() {
    automoe::cpu::alloc::retain_freed_memory();
    let threads = thread_counts();
    println!("translation latency (AutoMoE protocol), f32, CPU; rayon threads available: {}", rayon::current_num_threads());
    println!();
    println!("| space | subnet | GFLOPs (30/30) | threads | encoder ms | decoder ms | total ms |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let small = space("space_small.toml");
    let sup = Supernet::new(small.clone(), SMALL_VOCAB, ModelOptions::default(), 0, DType::F32).expect("small supernet");
    let mut configs = vec![("small smallest", smallest(&small)), ("small largest", small.largest())];
    let mut rng = seeded(7);
    for i in 0..3 {
        configs.push((["small sample 1", "small sample 2", "small sample 3"][i], small.sample(&mut rng).expect("sample")));
    }
    for (label, cfg) in &configs {
        latency_rows(label, &sup.view(cfg).expect("view"), SMALL_VOCAB, &threads);
    }
    let skip_wmt = std::env::var("AUTOMOE_BENCH_SKIP_WMT").is_ok_and(|v| v == "1");
    let wmt_sup = if skip_wmt {
        None
    } else {
        let wmt = space("space_wmt14.toml");
        let sup = Supernet::new(wmt.clone(), WMT_VOCAB, ModelOptions::default(), 0, DType::F32).expect("wmt supernet");
        for (label, cfg) in [("wmt14 smallest", smallest(&wmt)), ("wmt14 largest", wmt.largest())] {
            latency_rows(label, &sup.view(&cfg).expect("view"), WMT_VOCAB, &threads);
        }
        Some(sup)
    };
    drop(wmt_sup);

    println!();
    println!("batch translation: random sources of 10-30 tokens, batches of 32, beam 4, max length 1.2*src+10 (random weights rarely emit eos, so most outputs run to the maximum), all threads");
    println!();
    println!("| space | subnet | sentences | seconds | sentences/s | output tokens/s |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (label, cfg) in &configs[..2] {
        throughput(label, &sup.view(cfg).expect("view"), 64);
    }
}
