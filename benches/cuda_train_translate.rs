//! The CUDA tape backend end to end: training tokens/s (forward, backward, clipping, Adam, all on
//! the device) for the small space's supernet (a sampled subnet per update) and its dense baseline,
//! in f32 and in mixed precision (bf16 activations over f32 master weights); then translation
//! latency by AutoMoE's protocol (batch 1, 30-token source, 30 decoder steps at beam 5, trimmed
//! mean of 20 runs) for the dense baseline, the largest subnet and a heterogeneous MoE subnet, with
//! the beam's candidates selected on the device (the default) and on the host.
//!
//! ```sh
//! cargo bench --bench cuda_train_translate                        # cuda:0
//! AUTOMOE_BENCH_DEVICE=emu AUTOMOE_BENCH_UPDATES=1 cargo bench --bench cuda_train_translate
//! ```
//! Without a usable device it says so and exits successfully (the emulator run is a smoke test of
//! the benchmark itself, not a speed measurement: it is thousands of times slower).

mod common;

use automoe::decode::{measure, set_candidate_selection, CandidateSelection, LatencyProtocol};
use automoe::model::{ModelOptions, SubnetModel};
use automoe::train::mt;
use automoe::train::mt::data::{prepare, DataConfig, DataSource};
use automoe::train::TrainConfig;
use automoe::Device;

fn main() -> automoe::Result<()> {
    automoe::cpu::alloc::retain_freed_memory();
    let device: Device = std::env::var("AUTOMOE_BENCH_DEVICE").unwrap_or_else(|_| "cuda:0".into()).parse()?;
    if let Err(e) = automoe::cuda::Gpu::of(device) {
        println!("cuda_train_translate: skipped, {device} is not usable: {e}");
        return Ok(());
    }
    let emu = device == Device::Emu;
    let timed: u64 = std::env::var("AUTOMOE_BENCH_UPDATES").ok().and_then(|s| s.parse().ok()).unwrap_or(if emu { 1 } else { 20 });
    let warmup = if emu { 0 } else { 3 };
    let mut data_cfg = DataConfig::new(DataSource::Synthetic { seed: 0, n_train: 5000, n_valid: 100 });
    if emu {
        data_cfg.max_tokens = 64;
    }
    let data = prepare(&data_cfg, None, 1)?;
    let space = mt::small_space()?;
    println!(
        "device {device}: {} training batches, mean {:.0} target tokens per batch; vocab {}; {warmup} warm-up + {timed} timed updates",
        data.train.len(),
        data.train_tokens as f64 / data.train.len() as f64,
        data.tokenizer.vocab_size()
    );
    println!("{:<34} {:>10} {:>10} {:>12} {:>12}", "model", "precision", "params", "ms/update", "tokens/s");
    for (name, mode) in common::models(&space) {
        for mixed in [false, true] {
            let base = TrainConfig { device, mixed_precision: mixed, ..TrainConfig::default() };
            let t = common::time_updates(&mode, &data, &data_cfg, base, warmup, timed)?;
            let precision = if mixed { "bf16+f32" } else { "f32" };
            println!(
                "{name:<34} {precision:>10} {:>10} {:>12.1} {:>12.0}",
                t.params,
                1e3 * t.secs / timed as f64,
                t.tokens as f64 / t.secs
            );
        }
    }

    let vocab = data.tokenizer.vocab_size();
    let supernet = automoe::model::Supernet::new(space.clone(), vocab, ModelOptions::default(), 2, automoe::DType::F32)?;
    let mut moe = space.largest();
    // A heterogeneous MoE subnet: every FFN layer with the space's most experts, widths cycling
    // through the space's choices.
    let widths: Vec<usize> = (0..space.max_experts).map(|i| space.ffn_widths[i % space.ffn_widths.len()]).collect();
    for l in &mut moe.encoder {
        (l.experts, l.expert_widths) = (space.max_experts, widths.clone());
    }
    for l in &mut moe.decoder {
        (l.experts, l.expert_widths) = (space.max_experts, widths.clone());
    }
    let proto = if emu {
        LatencyProtocol { warmup: 0, runs: 1, trim: 0.0, steps: 2, ..LatencyProtocol::default() }
    } else {
        LatencyProtocol::default()
    };
    println!("\ntranslation latency on {device} ({} steps, beam {}, trimmed mean of {} runs)", proto.steps, proto.beam, proto.runs);
    // "decoder ms (host top-k)": the same steps with the beam's candidates selected on the host
    // from downloaded logits instead of by cuda/decode.cu, measured right after.
    println!("{:<34} {:>12} {:>12} {:>12} {:>24}", "subnet", "encoder ms", "decoder ms", "total ms", "decoder ms (host top-k)");
    let row = |name: &str, view: &automoe::model::ModelView| -> automoe::Result<()> {
        let r = measure(view, &proto)?;
        set_candidate_selection(CandidateSelection::Host);
        let host = measure(view, &proto);
        set_candidate_selection(CandidateSelection::Device);
        println!("{name:<34} {:>12.2} {:>12.2} {:>12.2} {:>24.2}", r.encoder_ms, r.decoder_ms, r.total_ms, host?.decoder_ms);
        Ok(())
    };
    for (name, cfg) in [("dense baseline", space.dense()), ("largest (dense FFNs)", space.largest()), ("heterogeneous MoE", moe)] {
        let model: SubnetModel = supernet.extract(&cfg)?.to_device(device)?;
        row(name, &model.view()?)?;
    }
    drop(supernet);
    if !emu {
        // The paper's WMT space with a 32000-entry vocabulary (random weights: the work is fixed by
        // the forced step count), where a GPU's bandwidth matters: the CPU needs 0.7-2 s here.
        let wmt = automoe::model::SearchSpace::from_toml_str(include_str!("../configs/space_wmt14.toml"))?;
        let big = automoe::model::Supernet::new(wmt.clone(), 32000, ModelOptions::default(), 3, automoe::DType::F32)?;
        for (name, cfg) in [("wmt14 dense (largest dims)", wmt.dense()), ("wmt14 largest (all experts)", wmt.largest())] {
            let model: SubnetModel = big.extract(&cfg)?.to_device(device)?;
            row(name, &model.view()?)?;
        }
    }
    Ok(())
}
