//! Incremental decoding: the encoder once, then the decoder one target position at a time.
//!
//! The decoder of a step sees only the new position; everything earlier is cached per decoder
//! layer:
//! * self-attention keys and values of every position so far (`[rows, t, qkv]`, one position
//!   appended per step);
//! * encoder–decoder keys and values, projected once per layer from that layer's own memory (the
//!   last 1–3 encoder outputs its span reads, concatenated along time, see
//!   [`super::cross_attention_memory`]), with the repeated source padding mask.
//!
//! Every weight is read through the same front-slice views and the same layer functions as the
//! full forward pass (`layers.rs`, `transformer.rs`), so a supernet subnet and a standalone
//! [`super::SubnetModel`] decode through one code path, and a step's logits equal the
//! teacher-forced [`super::transformer`] forward at that position (`tests/decode_incremental.rs`).
//!
//! Rows of the decoder state are hypotheses; [`DecoderState::reorder`] gathers them (beam search
//! keeps the best children, drops finished sentences, expands a sentence into beams). Each row
//! remembers which source sentence it belongs to; the encoder keys and values are re-gathered
//! only when that mapping changes.
//!
//! Inference differs from training in one deliberate way: the MoE layers run without a capacity
//! limit (each position is routed on its own, so a translation never depends on which other
//! sentences share its batch) and without computing the balance loss. Everything runs on
//! [`Tape::inference`]: nothing is recorded.

use std::sync::Arc;

use super::layers::{
    attend, attention_keys_values, attention_query, cross_attention_memory, ffn, sinusoidal_positions_on, AttnDims, Ctx, Part,
};
use super::params::NetParams;
use super::space::{span_layers, SubnetConfig};
use super::supernet::{SubnetModel, Supernet};
use super::transformer::{check_ids, check_model, encode_stack, residual, ModelOptions};
use crate::autograd::{ParamStore, Tape};
use crate::moe::MoeOptions;
use crate::tensor::MaskSpec;
use crate::{DType, Error, Result, Tensor};

/// A model ready to decode: parameters, their layout and the subnet to run on them. Borrowed from
/// a [`SubnetModel`] ([`SubnetModel::view`]) or a [`Supernet`] with a config ([`Supernet::view`]).
#[derive(Clone)]
pub struct ModelView<'a> {
    store: &'a ParamStore,
    net: &'a NetParams,
    opts: &'a ModelOptions,
    cfg: &'a SubnetConfig,
    vocab: usize,
    dtype: DType,
    /// The output projection `E[:, :d_dec]^T` as a contiguous `[d_dec, V]` copy. Why a copy: the
    /// `gemm` crate repacks a transposed (and, in a supernet, front-sliced) weight on every call,
    /// and for the few rows of a decoder step packing the largest matrix of the model cost more
    /// than the product (2–4x the step's output-projection time measured). Made once per view.
    out_proj_t: Tensor,
}

impl SubnetModel {
    /// The model as a decoder.
    pub fn view(&self) -> Result<ModelView<'_>> {
        ModelView::new(&self.store, &self.params, &self.options, &self.config)
    }
}

impl Supernet {
    /// Subnet `cfg` (validated against the space) of the supernet as a decoder.
    pub fn view<'a>(&'a self, cfg: &'a SubnetConfig) -> Result<ModelView<'a>> {
        self.space.validate(cfg)?;
        ModelView::new(&self.store, &self.params, &self.options, cfg)
    }
}

/// A right-padded batch of source sentences: `[batch, src_len]` ids and padding mask (true = pad).
#[derive(Clone, Debug)]
pub struct SourceBatch {
    pub batch: usize,
    pub src_len: usize,
    pub ids: Vec<u32>,
    pub pad: Vec<bool>,
}

impl SourceBatch {
    /// Right-pads `sentences` (each already ending in eos, as [`crate::data::Tokenizer::encode`]
    /// makes them) with `pad` to the longest one. Every sentence needs at least one token.
    pub fn from_sentences(sentences: &[Vec<u32>], pad: u32) -> Result<Self> {
        let src_len = sentences.iter().map(Vec::len).max().unwrap_or(0);
        if let Some(i) = sentences.iter().position(Vec::is_empty) {
            return Err(Error::invalid("SourceBatch", format!("sentence {i} has no tokens (an encoded sentence has at least its eos)")));
        }
        if src_len == 0 {
            return Err(Error::invalid("SourceBatch", "no sentences"));
        }
        let mut ids = Vec::with_capacity(sentences.len() * src_len);
        let mut mask = Vec::with_capacity(sentences.len() * src_len);
        for s in sentences {
            ids.extend(s.iter().copied().chain(std::iter::repeat_n(pad, src_len - s.len())));
            mask.extend((0..src_len).map(|i| i >= s.len()));
        }
        Ok(SourceBatch { batch: sentences.len(), src_len, ids, pad: mask })
    }
}

/// The encoder's output for a source batch: the encoder layer outputs the decoder reads.
#[derive(Clone)]
pub struct EncoderOutput {
    batch: usize,
    src_len: usize,
    src_pad: Vec<bool>,
    /// The last `cfg.max_span_layers()` encoder outputs `[B*S, d_enc]`, oldest first (after the
    /// final encoder LN in pre-norm models).
    states: Vec<Tensor>,
}

impl EncoderOutput {
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// Encoder–decoder keys and values of one decoder layer.
#[derive(Clone)]
struct CrossKv {
    /// Keys per memory position `m*S`, for each source sentence: `[B, m*S*qkv]` (gather table).
    k_src: Tensor,
    v_src: Tensor,
    /// `[B, m*S]` padding of the memory, when the source has any padding.
    pad_src: Option<Arc<Vec<bool>>>,
    /// Memory length `m*S`.
    tk: usize,
    /// The same for the current rows: `[rows*tk, qkv]`, `[rows, tk]`.
    k: Tensor,
    v: Tensor,
    pad: Option<Arc<Vec<bool>>>,
}

/// The decoder's incremental state: one row per hypothesis.
#[derive(Clone)]
pub struct DecoderState {
    rows: usize,
    /// Target positions already decoded (the next step's position).
    position: usize,
    /// Source sentence of each row.
    row_src: Vec<u32>,
    /// Per decoder layer: self-attention keys and values so far, `[rows, position, qkv]`
    /// (`None` before the first step).
    self_k: Vec<Option<Tensor>>,
    self_v: Vec<Option<Tensor>>,
    cross: Vec<CrossKv>,
    /// Sinusoidal positions `[capacity, d_dec]`, extended when decoding runs past them.
    positions: Tensor,
}

impl DecoderState {
    /// Hypotheses in the state.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Target positions decoded so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The source sentence (row of the encoder batch) each row decodes.
    pub fn row_sources(&self) -> &[u32] {
        &self.row_src
    }

    /// Keeps the rows `rows` (indices into the current rows, repeats allowed) in that order:
    /// beam search's reordering, the removal of finished sentences and the expansion of a
    /// sentence into beams are all this one gather.
    pub fn reorder(&mut self, rows: &[u32]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= self.rows) {
            return Err(Error::IndexOutOfRange { op: "DecoderState::reorder", index: bad as usize, limit: self.rows });
        }
        let n = rows.len();
        for c in self.self_k.iter_mut().chain(self.self_v.iter_mut()).flatten() {
            let (t, w) = (c.shape()[1], c.shape()[2]);
            *c = c.reshape(&[self.rows, t * w])?.embedding(rows)?.reshape(&[n, t, w])?;
        }
        let row_src: Vec<u32> = rows.iter().map(|&r| self.row_src[r as usize]).collect();
        if row_src != self.row_src {
            for c in &mut self.cross {
                gather_cross(c, &row_src)?;
            }
        }
        self.row_src = row_src;
        self.rows = n;
        Ok(())
    }
}

/// Builds a layer's current-row keys, values and mask from the per-sentence tables.
fn gather_cross(c: &mut CrossKv, row_src: &[u32]) -> Result<()> {
    let qkv = c.k_src.shape()[1] / c.tk;
    let rows = row_src.len();
    c.k = c.k_src.embedding(row_src)?.reshape(&[rows * c.tk, qkv])?;
    c.v = c.v_src.embedding(row_src)?.reshape(&[rows * c.tk, qkv])?;
    c.pad = c.pad_src.as_ref().map(|p| {
        let mut m = Vec::with_capacity(rows * c.tk);
        for &s in row_src {
            m.extend_from_slice(&p[s as usize * c.tk..(s as usize + 1) * c.tk]);
        }
        Arc::new(m)
    });
    Ok(())
}

/// Initial capacity of the position table (doubled when decoding runs past it).
const POSITIONS_INIT: usize = 256;

impl<'a> ModelView<'a> {
    /// Checks that the parameters fit the config and have the layout the options say.
    pub fn new(store: &'a ParamStore, net: &'a NetParams, opts: &'a ModelOptions, cfg: &'a SubnetConfig) -> Result<Self> {
        let vocab = check_model(store, net, opts, cfg)?;
        let embed = store.value(net.embed);
        let dtype = embed.dtype();
        let out_proj_t = embed.front_slice(&[vocab, cfg.decoder_embed_dim])?.t()?.contiguous()?;
        Ok(ModelView { store, net, opts, cfg, vocab, dtype, out_proj_t })
    }

    /// Rows of the shared embedding (the output vocabulary).
    /// Waits for every kernel queued on the model's device (nothing to wait for on the CPU or the
    /// emulator, which run each op at once).
    pub fn synchronize(&self) -> Result<()> {
        let device = self.store.value(self.net.embed).device();
        if let crate::Device::Cuda(_) = device {
            crate::cuda::Gpu::of(device)?.synchronize()?;
        }
        Ok(())
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn config(&self) -> &SubnetConfig {
        self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Runs the encoder on a source batch.
    pub fn encode(&self, src: &SourceBatch) -> Result<EncoderOutput> {
        check_ids(&src.ids, self.vocab, "source")?;
        let mut tape = Tape::inference();
        let mut ctx = Ctx::new(&mut tape, self.store, false, 0, self.dtype, self.store.value(self.net.embed).device());
        let enc = encode_stack(&mut ctx, self.net, self.opts, self.cfg, &src.ids, &src.pad, src.batch, src.src_len)?;
        let keep = self.cfg.max_span_layers();
        let states = enc.states[enc.states.len() - keep..].iter().map(|v| v.value().clone()).collect();
        Ok(EncoderOutput { batch: src.batch, src_len: src.src_len, src_pad: src.pad.clone(), states })
    }

    /// The decoder state for `enc`, one row per source sentence, before the first step: projects
    /// each decoder layer's encoder–decoder keys and values from the memory its span reads.
    pub fn start(&self, enc: &EncoderOutput) -> Result<DecoderState> {
        if enc.states.len() != self.cfg.max_span_layers() {
            return Err(Error::invalid(
                "DecoderState",
                format!("the encoder output holds {} layers, this subnet reads {}", enc.states.len(), self.cfg.max_span_layers()),
            ));
        }
        let (b, s, qkv) = (enc.batch, enc.src_len, self.cfg.qkv_dim);
        let mut tape = Tape::inference();
        let states: Vec<_> = enc.states.iter().map(|t| tape.constant(t.clone())).collect();
        let mut ctx = Ctx::new(&mut tape, self.store, false, 0, self.dtype, self.store.value(self.net.embed).device());
        ctx.part = Part::Decoder;
        let any_pad = enc.src_pad.iter().any(|&p| p);
        let mut cross = Vec::with_capacity(self.cfg.decoder.len());
        for (l, p) in self.cfg.decoder.iter().zip(&self.net.decoder) {
            let m = span_layers(l.cross_span).ok_or_else(|| Error::invalid("SubnetConfig", format!("bad cross_span {}", l.cross_span)))?;
            let (mem, mask) = cross_attention_memory(ctx.tape, &states, &enc.src_pad, b, s, m)?;
            let (k, v) = attention_keys_values(&mut ctx, &p.cross_attn, &mem, qkv)?;
            let tk = m * s;
            let k_src = k.value().reshape(&[b, tk * qkv])?;
            let v_src = v.value().reshape(&[b, tk * qkv])?;
            let pad_src = any_pad.then_some(mask);
            cross.push(CrossKv { k: k.value().clone(), v: v.value().clone(), pad: pad_src.clone(), k_src, v_src, pad_src, tk });
        }
        let n = self.cfg.decoder.len();
        Ok(DecoderState {
            rows: b,
            position: 0,
            row_src: (0..b as u32).collect(),
            self_k: vec![None; n],
            self_v: vec![None; n],
            cross,
            positions: sinusoidal_positions_on(
                POSITIONS_INIT,
                self.cfg.decoder_embed_dim,
                self.dtype,
                self.store.value(self.net.embed).device(),
            )?,
        })
    }

    /// One decoder step: `tokens` (one per row: bos at the first step, then each hypothesis's
    /// last token) at the state's next position. Appends to the caches and returns the logits
    /// `[rows, vocab]`.
    pub fn step(&self, state: &mut DecoderState, tokens: &[u32]) -> Result<Tensor> {
        if tokens.len() != state.rows {
            return Err(Error::invalid("decoder step", format!("{} tokens for {} rows", tokens.len(), state.rows)));
        }
        check_ids(tokens, self.vocab, "target")?;
        let (rows, pos, dd, qkv) = (state.rows, state.position, self.cfg.decoder_embed_dim, self.cfg.qkv_dim);
        if pos >= state.positions.shape()[0] {
            state.positions = sinusoidal_positions_on(2 * (pos + 1), dd, self.dtype, self.store.value(self.net.embed).device())?;
        }
        let moe_opts = MoeOptions { capacity_factor: None, balance_coef: 0.0, ..self.opts.moe() };
        let pre_norm = self.opts.pre_norm;
        let mut tape = Tape::inference();
        let mut ctx = Ctx::new(&mut tape, self.store, false, 0, self.dtype, self.store.value(self.net.embed).device());
        ctx.part = Part::Decoder;

        // The same embedding as the full pass (`transformer::embed`), at position `pos` only.
        let table = ctx.tape.param(self.store, self.net.embed)?;
        let x = ctx.tape.embedding(&table, tokens)?;
        let x = ctx.tape.front_slice(&x, &[rows, dd])?;
        let x = ctx.tape.scale(&x, (dd as f64).sqrt())?;
        let p_row = state.positions.narrow(0, pos, 1)?.broadcast_to(&[rows, dd])?;
        let p_row = ctx.tape.constant(p_row);
        let mut y = ctx.tape.add(&x, &p_row)?;

        let no_mask = MaskSpec::default();
        for (li, (l, p)) in self.cfg.decoder.iter().zip(&self.net.decoder).enumerate() {
            let self_dims = AttnDims { batch: rows, tq: 1, tk: pos + 1, heads: l.self_heads, qkv, d_q: dd };
            let (cache_k, cache_v) = (&mut state.self_k[li], &mut state.self_v[li]);
            y = residual(&mut ctx, &y, &p.self_ln, dd, pre_norm, 0.0, |c, h| {
                let q = attention_query(c, &p.self_attn, h, &self_dims)?;
                let (k, v) = attention_keys_values(c, &p.self_attn, h, qkv)?;
                let k = append(cache_k, k.value(), rows, qkv)?;
                let v = append(cache_v, v.value(), rows, qkv)?;
                let (k, v) = (c.tape.constant(k), c.tape.constant(v));
                // The query is the newest position: every cached key is visible, none is padding.
                attend(c, &p.self_attn, &q, &k, &v, &self_dims, &no_mask, 0.0)
            })?;
            let cross = &state.cross[li];
            let cross_dims = AttnDims { batch: rows, tq: 1, tk: cross.tk, heads: l.cross_heads, qkv, d_q: dd };
            let cross_mask = MaskSpec { causal: false, key_padding: cross.pad.clone() };
            y = residual(&mut ctx, &y, &p.cross_ln, dd, pre_norm, 0.0, |c, h| {
                let q = attention_query(c, &p.cross_attn, h, &cross_dims)?;
                let (k, v) = (c.tape.constant(cross.k.clone()), c.tape.constant(cross.v.clone()));
                attend(c, &p.cross_attn, &q, &k, &v, &cross_dims, &cross_mask, 0.0)
            })?;
            let k = self.cfg.k_for(l.experts);
            y = residual(
                &mut ctx,
                &y,
                &p.ffn_ln,
                dd,
                pre_norm,
                0.0,
                |c, h| Ok(ffn(c, &p.ffn, h, &l.expert_widths, k, &moe_opts, None)?.0),
            )?;
        }
        if let Some(ln) = &self.net.decoder_ln {
            y = ctx.layer_norm(&y, ln, dd)?;
        }
        // The shared embedding as output projection, `y E[:, :d]^T`, from the contiguous copy.
        let logits = y.value().matmul(&self.out_proj_t)?;
        state.position += 1;
        Ok(logits)
    }
}

/// Appends one position `new: [rows, qkv]` to a cache `[rows, t, qkv]`; returns the updated cache
/// as `[rows*(t+1), qkv]` (the layout attention reads).
fn append(cache: &mut Option<Tensor>, new: &Tensor, rows: usize, qkv: usize) -> Result<Tensor> {
    let new = new.reshape(&[rows, 1, qkv])?;
    let all = match cache.take() {
        None => new,
        Some(c) => Tensor::concat(&[&c, &new], 1)?,
    };
    let t = all.shape()[1];
    let flat = all.reshape(&[rows * t, qkv])?;
    *cache = Some(all);
    Ok(flat)
}
