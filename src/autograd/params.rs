//! The parameter store: every trainable tensor of a model, by name, with its gradient buffer.
//! A supernet's parameters are stored at their largest size; subnets read front slices of them,
//! and the gradients of those slices accumulate into the matching slice of the full gradient.

use std::collections::HashMap;

use crate::tensor::Tensor;
use crate::{Error, Result};

use super::tape::Gradients;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub value: Tensor,
    /// Sum of the gradients accumulated since the last `zero_grads`; `None` when nothing touched it.
    pub grad: Option<Tensor>,
}

#[derive(Clone, Debug, Default)]
pub struct ParamStore {
    params: Vec<Param>,
    by_name: HashMap<String, ParamId>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a parameter; names are unique.
    pub fn add(&mut self, name: impl Into<String>, value: Tensor) -> Result<ParamId> {
        let name = name.into();
        if self.by_name.contains_key(&name) {
            return Err(Error::invalid("ParamStore::add", format!("a parameter named `{name}` already exists")));
        }
        let id = ParamId(self.params.len());
        self.by_name.insert(name.clone(), id);
        self.params.push(Param { name, value, grad: None });
        Ok(id)
    }

    /// The same parameters with values (and gradients) moved to `device`.
    pub fn to_device(mut self, device: crate::Device) -> Result<Self> {
        for p in &mut self.params {
            p.value = p.value.to_device(device)?;
            if let Some(g) = p.grad.take() {
                p.grad = Some(g.to_device(device)?);
            }
        }
        Ok(self)
    }

    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }

    pub fn get_mut(&mut self, id: ParamId) -> &mut Param {
        &mut self.params[id.0]
    }

    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].value
    }

    pub fn grad(&self, id: ParamId) -> Option<&Tensor> {
        self.params[id.0].grad.as_ref()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Param)> {
        self.params.iter().enumerate().map(|(i, p)| (ParamId(i), p))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Param)> {
        self.params.iter_mut().enumerate().map(|(i, p)| (ParamId(i), p))
    }

    /// Total number of scalars stored.
    pub fn numel(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }

    pub fn zero_grads(&mut self) {
        for p in &mut self.params {
            p.grad = None;
        }
    }

    /// Adds the parameter gradients of one backward pass into the stored gradients.
    pub fn accumulate(&mut self, grads: &Gradients) -> Result<()> {
        for (id, g) in grads.param_grads()? {
            let p = &mut self.params[id.0];
            if g.shape() != p.value.shape() {
                return Err(Error::ShapeMismatch { op: "accumulate gradient", lhs: p.value.shape().to_vec(), rhs: g.shape().to_vec() });
            }
            p.grad = Some(match p.grad.take() {
                None => g,
                Some(acc) => acc.add(&g)?,
            });
        }
        Ok(())
    }
}
