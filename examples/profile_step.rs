//! Times one training step (forward + backward) of the small space's largest subnet, to see where
//! CPU time goes. Run: `cargo run --release --example profile_step`.

use std::time::Instant;

use automoe::autograd::Tape;
use automoe::model::{Batch, ModelOptions, RunMode, SearchSpace, Supernet};
use automoe::DType;
use rand::Rng;

fn main() -> automoe::Result<()> {
    let space = SearchSpace::from_toml_str(include_str!("../configs/space_small.toml"))?;
    let vocab = 8000;
    let net = Supernet::new(space.clone(), vocab, ModelOptions::default(), 0, DType::F32)?;
    let mut rng = automoe::rng::seeded(1);
    let (b, s, t) = (64usize, 20usize, 22usize);
    let src: Vec<Vec<u32>> = (0..b).map(|_| (0..s).map(|_| rng.random_range(4..vocab as u32)).collect()).collect();
    let tgt: Vec<Vec<u32>> = (0..b).map(|_| (0..t).map(|_| rng.random_range(4..vocab as u32)).collect()).collect();
    let batch = Batch::from_sentences(&src, &tgt, 0)?;
    for (name, cfg) in [("largest", space.largest()), ("sampled", space.sample(&mut rng)?)] {
        for rep in 0..3 {
            let t0 = Instant::now();
            let mut tape = Tape::new();
            let out = net.forward(&mut tape, &cfg, &batch, RunMode::train(rep))?;
            let t1 = Instant::now();
            let targets: Vec<u32> = tgt.iter().flatten().copied().collect();
            let (loss, _) = tape.cross_entropy(&out.logits, &targets, 0.1, Some(0))?;
            let t2 = Instant::now();
            let _ = tape.backward(&loss)?;
            let t3 = Instant::now();
            println!(
                "{name}: forward {:.0} ms, loss {:.0} ms, backward {:.0} ms, {} tape nodes, {:.0} tokens/s",
                (t1 - t0).as_secs_f64() * 1e3,
                (t2 - t1).as_secs_f64() * 1e3,
                (t3 - t2).as_secs_f64() * 1e3,
                tape.len(),
                (b * t) as f64 / (t3 - t0).as_secs_f64()
            );
        }
    }
    Ok(())
}
