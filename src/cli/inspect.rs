//! `automoe inspect`: what a model is — every layer's attention heads, experts and expert widths,
//! the model's options, its parameter counts and GFLOPs — for a model directory (what `train` and
//! `pipeline` export, loaded and checked as `translate` loads it) or a subnet configuration file
//! (what `search` writes as `best.json`; it has no vocabulary, so `--vocab` gives one). Nothing is
//! run: the costs are the counts the search constrains, every expert of a layer getting an equal
//! share of the tokens.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::json;

use crate::cli::translate::load_model_dir;
use crate::fsio::{check_output_file, write_atomic};
use crate::model::{span_layers, FfnActivation, ModelOptions, Routing, SubnetConfig, SubnetCost, PAPER_SRC_LEN, PAPER_TGT_LEN};
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A model directory (model.json, model.safetensors, tokenizer.json) or a subnet
    /// configuration JSON file (`SubnetConfig::to_json`, e.g. a search's best.json).
    pub path: PathBuf,
    /// Vocabulary size for a configuration file (the tokenizer's size; a model directory has its own).
    #[arg(long)]
    pub vocab: Option<usize>,
    /// For a configuration file: count the final layer norms of a pre-norm model.
    #[arg(long)]
    pub pre_norm: bool,
    /// Also write the description as one JSON object here (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `inspect` found: the architecture, the options of a saved model, and the costs.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub path: PathBuf,
    pub config: SubnetConfig,
    pub vocab: usize,
    /// A saved model's options; none for a configuration file.
    pub options: Option<ModelOptions>,
    pub pre_norm: bool,
    pub cost: SubnetCost,
}

/// Reads `args.path` (a model directory or a configuration file) and counts its costs.
pub fn inspect(args: &Args) -> Result<Inspection> {
    let (config, vocab, options) = if args.path.is_dir() {
        if args.vocab.is_some() || args.pre_norm {
            return Err(Error::invalid(
                "inspect",
                format!(
                    "{} is a model directory, which has its own vocabulary and options: drop --vocab and --pre-norm",
                    args.path.display()
                ),
            ));
        }
        let (model, _) = load_model_dir(&args.path)?;
        (model.config, model.vocab, Some(model.options))
    } else {
        let config = SubnetConfig::from_json_file(&args.path)?;
        let vocab = args.vocab.ok_or_else(|| {
            Error::invalid(
                "inspect",
                format!(
                    "{} is a subnet configuration, which has no vocabulary: pass --vocab N (its tokenizer's size)",
                    args.path.display()
                ),
            )
        })?;
        crate::model::check_vocab(vocab, "inspect --vocab")?;
        (config, vocab, None)
    };
    let pre_norm = options.as_ref().map_or(args.pre_norm, |o| o.pre_norm);
    let cost = SubnetCost::of(&config, vocab, pre_norm, &Routing::Uniform)?;
    Ok(Inspection { path: args.path.clone(), config, vocab, options, pre_norm, cost })
}

/// A layer's FFN: `dense 1024` or `3 experts: 1024, 512, 512`.
fn ffn(widths: &[usize]) -> String {
    match widths {
        [w] => format!("dense {w}"),
        _ => format!("{} experts: {}", widths.len(), widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

fn millions(n: f64) -> String {
    format!("{:.2} M", n / 1e6)
}

/// The description `automoe inspect` prints.
pub fn describe(i: &Inspection) -> String {
    let c = &i.config;
    let mut s = String::new();
    let kind = if i.options.is_some() { "model directory" } else { "subnet configuration" };
    let norm = if i.pre_norm { "pre-norm" } else { "post-norm" };
    let _ = write!(s, "{} ({kind}): vocabulary {}, {norm}", i.path.display(), i.vocab);
    if let Some(o) = &i.options {
        let act = match o.activation {
            FfnActivation::Relu => "ReLU",
            FfnActivation::Gelu => "GELU",
        };
        let _ = write!(s, ", {act} FFNs");
        if o.renormalize_gates {
            s.push_str(", top-k gates renormalised");
        }
        if let Some(f) = o.capacity_factor {
            let _ = write!(s, ", expert capacity factor {f}");
        }
    }
    let moe = c.encoder.iter().map(|l| l.experts).chain(c.decoder.iter().map(|l| l.experts)).any(|e| e > 1);
    if moe {
        let _ = write!(s, ", top-{} routing", c.route_k);
    }
    let _ = writeln!(s, "\nencoder: embed {}, attention width {}, {} layers", c.encoder_embed_dim, c.qkv_dim, c.encoder.len());
    for (n, l) in c.encoder.iter().enumerate() {
        let _ = writeln!(s, "  layer {n}: {} heads; FFN {}", l.self_heads, ffn(&l.expert_widths));
    }
    let _ = writeln!(s, "decoder: embed {}, attention width {}, {} layers", c.decoder_embed_dim, c.qkv_dim, c.decoder.len());
    for (n, l) in c.decoder.iter().enumerate() {
        let span = span_layers(l.cross_span).unwrap_or(1);
        let over = if span == 1 { "the last encoder layer".to_string() } else { format!("the last {span} encoder layers") };
        let _ = writeln!(
            s,
            "  layer {n}: {} self-attention heads, {} cross-attention heads over {over}; FFN {}",
            l.self_heads,
            l.cross_heads,
            ffn(&l.expert_widths)
        );
    }
    let p = &i.cost.params;
    let _ = writeln!(
        s,
        "parameters: {} in all ({} of them the shared embedding); {} active per token{}",
        millions(p.total as f64),
        millions(p.embedding as f64),
        millions(p.active_per_token),
        if moe { " (every expert of a layer an equal share of the tokens)" } else { "" }
    );
    let f = &i.cost.flops;
    let _ = writeln!(
        s,
        "GFLOPs: {:.3} for a {PAPER_SRC_LEN}-token source and {PAPER_TGT_LEN}-token target, encoder {:.3} + decoder {:.3} as the \
         paper counts (the output projection adds {:.3})",
        f.paper_gflops(),
        f.encoder / 1e9,
        f.decoder / 1e9,
        f.output / 1e9
    );
    s
}

/// What `--json` writes.
pub fn to_json(i: &Inspection) -> serde_json::Value {
    json!({
        "path": i.path,
        "kind": if i.options.is_some() { "model" } else { "subnet_config" },
        "vocab": i.vocab,
        "pre_norm": i.pre_norm,
        "options": i.options,
        "config": i.config,
        "experts": i.config.experts_per_layer(),
        "params": i.cost.params,
        "flops": i.cost.flops,
        "gflops": i.cost.flops.paper_gflops(),
    })
}

pub fn run(args: Args) -> Result<()> {
    if let Some(p) = &args.json {
        check_output_file(p, "inspect --json")?;
        // The file inspected, or any file of the model directory, must not be replaced.
        let files = crate::cli::translate::model_dir_files(&args.path);
        let mut inputs: Vec<(&'static str, &std::path::Path)> = vec![("the inspected path", &args.path)];
        inputs.extend(files.iter().map(|(what, f)| (*what, f.as_path())));
        crate::fsio::check_distinct_outputs(&[("inspect --json", p)], &inputs)?;
    }
    let i = inspect(&args)?;
    print!("{}", describe(&i));
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&to_json(&i)).map_err(|e| Error::invalid("inspect --json", e.to_string()))?;
        write_atomic(p, format!("{text}\n").as_bytes())?;
    }
    Ok(())
}
