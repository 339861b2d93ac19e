//! The supernet (max-size weights shared by every subnet) and standalone subnet models extracted
//! from it, with safetensors save/load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::params::NetParams;
use super::space::{SearchSpace, SubnetConfig};
use super::transformer::{forward, Batch, ModelOptions, ModelOutput, PassRouting, RunMode};
use crate::autograd::{ParamId, ParamStore, Tape};
use crate::fsio::write_atomic;
use crate::tensor::{parse_safetensors, serialize_safetensors, tensor_from_safetensors};
use crate::{DType, Error, Result, Tensor};

/// The weight-sharing supernet of a search space: every module at its largest size; any subnet
/// of the space runs on front slices of it.
pub struct Supernet {
    pub space: SearchSpace,
    pub options: ModelOptions,
    pub vocab: usize,
    pub store: ParamStore,
    pub params: NetParams,
}

impl Supernet {
    /// A freshly initialised supernet, seeded; parameters in `dtype` (f32 for training, f64 for
    /// gradient checks).
    pub fn new(space: SearchSpace, vocab: usize, options: ModelOptions, seed: u64, dtype: DType) -> Result<Self> {
        options.check()?;
        space.check()?;
        super::space::check_vocab(vocab, "Supernet::new")?;
        // A space too big for the machine is an error here; the allocations would abort.
        let count = super::cost::param_report(&space.largest(), vocab, options.pre_norm, &super::cost::Routing::Uniform)?.total;
        let bytes = (count as u64).saturating_mul(dtype.size_in_bytes().max(4) as u64);
        crate::device::check_host_memory(bytes, &format!("the {count} parameters of the supernet of space `{}`", space.name))?;
        let mut store = ParamStore::new();
        let mut rng = crate::rng::seeded(seed);
        let params = NetParams::create_supernet(&mut store, &space, vocab, options.pre_norm, &mut rng)?;
        convert_store(&mut store, dtype)?;
        Ok(Supernet { space, options, vocab, store, params })
    }

    /// Runs subnet `cfg` (validated against the space) on `batch`.
    pub fn forward(&self, tape: &mut Tape, cfg: &SubnetConfig, batch: &Batch, run: RunMode) -> Result<ModelOutput> {
        self.space.validate(cfg)?;
        forward(tape, &self.store, &self.params, &self.options, cfg, batch, run)
    }

    /// A standalone model of `cfg` holding copies of exactly the weights the subnet uses.
    pub fn extract(&self, cfg: &SubnetConfig) -> Result<SubnetModel> {
        self.space.validate(cfg)?;
        self.params.check_fits(&self.store, cfg)?;
        let mut store = ParamStore::new();
        let params = self.params.map(cfg, self.vocab, |id, sizes| {
            let src = self.store.get(id);
            let slice = src.value.front_slice(sizes)?.contiguous_owned()?;
            store.add(src.name.clone(), slice)
        })?;
        Ok(SubnetModel { config: cfg.clone(), options: self.options.clone(), vocab: self.vocab, store, params })
    }
}

fn convert_store(store: &mut ParamStore, dtype: DType) -> Result<()> {
    for (_, p) in store.iter_mut() {
        if p.value.dtype() != dtype {
            p.value = p.value.to_dtype(dtype)?;
        }
    }
    Ok(())
}

/// A standalone subnet: the same Transformer code run with max sizes equal to the subnet's.
pub struct SubnetModel {
    pub config: SubnetConfig,
    pub options: ModelOptions,
    pub vocab: usize,
    pub store: ParamStore,
    pub params: NetParams,
}

/// The JSON sidecar of a saved model.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedModel {
    format: String,
    config: SubnetConfig,
    options: ModelOptions,
    vocab: usize,
    /// Tensor names in the order the parameter walk visits them (safetensors sorts its header).
    param_order: Vec<String>,
}

const FORMAT: &str = "automoe-subnet-v1";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "model.json";

impl SubnetModel {
    pub fn forward(&self, tape: &mut Tape, batch: &Batch, run: RunMode) -> Result<ModelOutput> {
        forward(tape, &self.store, &self.params, &self.options, &self.config, batch, run)
    }

    /// The routing of every FFN layer over `batches`, teacher-forced in inference mode and summed
    /// (padding excluded): what [`super::Routing::measured`] turns into the expert shares this
    /// model's routers actually chose, e.g. on a test set.
    pub fn measure_routing(&self, batches: &[Batch]) -> Result<PassRouting> {
        let mut total = PassRouting::default();
        for b in batches {
            let out = self.forward(&mut Tape::inference(), b, RunMode::inference())?;
            total.merge(&out.routing)?;
        }
        Ok(total)
    }

    /// Scalars stored (every one of them is used by the subnet).
    pub fn numel(&self) -> usize {
        self.store.numel()
    }

    /// Saves `dir/model.safetensors` and `dir/model.json` (each written atomically).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let w_path = dir.join(WEIGHTS_FILE);
        let entries: Vec<(&str, &Tensor)> = self.store.iter().map(|(_, p)| (p.name.as_str(), &p.value)).collect();
        let names = entries.iter().map(|(n, _)| n.to_string()).collect();
        let meta = HashMap::from([("format".to_string(), FORMAT.to_string())]);
        let bytes = serialize_safetensors(&entries, Some(meta), &w_path)?;
        write_atomic(&w_path, &bytes)?;
        let saved = SavedModel {
            format: FORMAT.into(),
            config: self.config.clone(),
            options: self.options.clone(),
            vocab: self.vocab,
            param_order: names,
        };
        let json = serde_json::to_string_pretty(&saved).map_err(|e| Error::invalid("save", e.to_string()))?;
        write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
    }

    /// The same model with its weights on `device` (f64 weights become f32 on a CUDA backend).
    pub fn to_device(mut self, device: crate::Device) -> Result<Self> {
        if device.is_cuda() {
            device.check_available()?;
            for (_, p) in self.store.iter_mut() {
                if p.value.dtype() == DType::F64 {
                    p.value = p.value.to_dtype(DType::F32)?;
                }
            }
        }
        self.store = self.store.to_device(device)?;
        Ok(self)
    }

    /// Loads a model written by [`SubnetModel::save`], checking every tensor's shape against the
    /// config.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let fmt = |p: &PathBuf, msg: String| Error::Format { path: p.clone(), msg };
        let saved: SavedModel = serde_json::from_str(&text).map_err(|e| fmt(&cfg_path, e.to_string()))?;
        if saved.format != FORMAT {
            return Err(fmt(&cfg_path, format!("format `{}` is not `{FORMAT}`", saved.format)));
        }
        saved.config.check().map_err(|e| fmt(&cfg_path, e.to_string()))?;
        saved.options.check().map_err(|e| fmt(&cfg_path, e.to_string()))?;
        super::space::check_vocab(saved.vocab, "vocab").map_err(|e| fmt(&cfg_path, e.to_string()))?;
        let w_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&w_path).map_err(|e| Error::io(&w_path, e))?;
        let st = parse_safetensors(&bytes, &w_path)?;
        let mut store = ParamStore::new();
        for name in &saved.param_order {
            if store.id(name).is_some() {
                return Err(fmt(&cfg_path, format!("param_order lists `{name}` twice")));
            }
            let v = st.tensor(name).map_err(|e| fmt(&w_path, format!("tensor `{name}`: {e}")))?;
            store.add(name.clone(), tensor_from_safetensors(&v, name, &w_path)?)?;
        }
        if st.len() != store.len() {
            return Err(fmt(&w_path, format!("{} tensors in the file, {} listed in {CONFIG_FILE}", st.len(), store.len())));
        }
        // Bind the tensors in walk order, checking that each has the shape the walk expects.
        let skeleton = NetParams::skeleton(&saved.config, saved.options.pre_norm);
        let mut next = 0usize;
        let params = skeleton.map(&saved.config, saved.vocab, |_, sizes| {
            let id = ParamId(next);
            if next >= store.len() {
                return Err(fmt(&w_path, format!("too few tensors: the config needs more than {}", store.len())));
            }
            let p = store.get(id);
            if p.value.shape() != sizes {
                return Err(fmt(&w_path, format!("tensor `{}` has shape {:?}, the config needs {:?}", p.name, p.value.shape(), sizes)));
            }
            next += 1;
            Ok(id)
        })?;
        if next != store.len() {
            return Err(fmt(&w_path, format!("{} tensors stored, the config uses {next}", store.len())));
        }
        Ok(SubnetModel { config: saved.config, options: saved.options, vocab: saved.vocab, store, params })
    }
}
