//! Where one MoE call's routing lives. On the CPU it is a host [`Dispatch`]. On a CUDA backend
//! without a capacity limit it stays on the device ([`DeviceIds`], [`DeviceDispatch`]): the top-k
//! and the dispatch are kernels whose index buffers the permute, grouped-GEMM and combine launches
//! read in place, so an MoE layer never waits for the GPU in the middle of a pass. The tape ops take
//! these types; the host learns a device routing's counts only when asked ([`MoeRouting::counts`]).

use std::sync::Arc;

use super::Dispatch;
use crate::cuda::tensor::{DeviceDispatch, DeviceIds};
use crate::{Error, Result};

/// Each token's chosen experts `[T * k]`, by descending probability (ties to the lower index).
#[derive(Clone, Debug)]
pub enum ExpertIds {
    Host(Arc<Vec<u32>>),
    Device(Arc<DeviceIds>),
}

impl ExpertIds {
    /// The ids on the host (a download for device ids).
    pub fn to_host(&self) -> Result<Arc<Vec<u32>>> {
        match self {
            ExpertIds::Host(v) => Ok(v.clone()),
            ExpertIds::Device(d) => Ok(Arc::new(d.to_host()?)),
        }
    }
}

/// The routing of one MoE call: which row each (token, slot) pair goes to.
#[derive(Clone, Debug)]
pub enum MoeRouting {
    Host(Arc<Dispatch>),
    /// On the device, no capacity limit: every pair keeps a row.
    Device(Arc<DeviceDispatch>),
}

impl From<Arc<Dispatch>> for MoeRouting {
    fn from(d: Arc<Dispatch>) -> Self {
        MoeRouting::Host(d)
    }
}

impl From<&Arc<Dispatch>> for MoeRouting {
    fn from(d: &Arc<Dispatch>) -> Self {
        MoeRouting::Host(d.clone())
    }
}

impl From<&Dispatch> for MoeRouting {
    fn from(d: &Dispatch) -> Self {
        MoeRouting::Host(Arc::new(d.clone()))
    }
}

impl From<Dispatch> for MoeRouting {
    fn from(d: Dispatch) -> Self {
        MoeRouting::Host(Arc::new(d))
    }
}

impl From<&MoeRouting> for MoeRouting {
    fn from(r: &MoeRouting) -> Self {
        r.clone()
    }
}

impl MoeRouting {
    pub fn tokens(&self) -> usize {
        match self {
            MoeRouting::Host(d) => d.tokens,
            MoeRouting::Device(d) => d.tokens(),
        }
    }

    pub fn k(&self) -> usize {
        match self {
            MoeRouting::Host(d) => d.k,
            MoeRouting::Device(d) => d.k(),
        }
    }

    pub fn experts(&self) -> usize {
        match self {
            MoeRouting::Host(d) => d.experts,
            MoeRouting::Device(d) => d.experts(),
        }
    }

    /// Rows of the permuted (expert-contiguous) matrix.
    pub fn rows(&self) -> usize {
        match self {
            MoeRouting::Host(d) => d.rows(),
            MoeRouting::Device(d) => d.rows(),
        }
    }

    /// Pairs each expert kept `[E]` (for a device routing: downloaded at the first call).
    pub fn counts(&self) -> Result<&[usize]> {
        match self {
            MoeRouting::Host(d) => Ok(&d.counts),
            MoeRouting::Device(d) => d.counts(),
        }
    }

    /// Pairs routed to each expert before any capacity limit `[E]` (a device routing has none).
    pub fn routed(&self) -> Result<&[usize]> {
        match self {
            MoeRouting::Host(d) => Ok(&d.routed),
            MoeRouting::Device(d) => d.counts(),
        }
    }

    /// The whole dispatch on the host (a download for a device routing).
    pub fn to_host(&self) -> Result<Arc<Dispatch>> {
        match self {
            MoeRouting::Host(d) => Ok(d.clone()),
            MoeRouting::Device(d) => Ok(Arc::new(d.to_host()?)),
        }
    }

    /// The host dispatch, or an error naming `op` (CPU kernels cannot read a device routing).
    pub(crate) fn host(&self, op: &'static str) -> Result<&Dispatch> {
        match self {
            MoeRouting::Host(d) => Ok(d),
            MoeRouting::Device(_) => Err(device_routing_on_cpu(op)),
        }
    }
}

/// How the permuted rows split among the experts of a grouped FFN call.
#[derive(Clone, Debug)]
pub enum Segments {
    /// Segment starts `[E + 1]` (0, non-decreasing, ending at the row count).
    Host(Arc<Vec<usize>>),
    /// The offsets of a device dispatch.
    Device(Arc<DeviceDispatch>),
}

impl From<&MoeRouting> for Segments {
    fn from(r: &MoeRouting) -> Self {
        match r {
            MoeRouting::Host(d) => Segments::Host(Arc::new(d.offsets.clone())),
            MoeRouting::Device(d) => Segments::Device(d.clone()),
        }
    }
}

impl From<&[usize]> for Segments {
    fn from(o: &[usize]) -> Self {
        Segments::Host(Arc::new(o.to_vec()))
    }
}

impl Segments {
    /// Rows each expert received `[E]` (for device segments: downloaded at the first call).
    pub fn counts(&self) -> Result<Vec<usize>> {
        match self {
            Segments::Host(o) => Ok(o.windows(2).map(|w| w[1] - w[0]).collect()),
            Segments::Device(d) => Ok(d.counts()?.to_vec()),
        }
    }

    /// The host offsets, or an error naming `op` (CPU kernels cannot read device offsets).
    pub(crate) fn host(&self, op: &'static str) -> Result<&[usize]> {
        match self {
            Segments::Host(o) => Ok(o),
            Segments::Device(_) => Err(device_routing_on_cpu(op)),
        }
    }
}

fn device_routing_on_cpu(op: &'static str) -> Error {
    Error::invalid(op, "a routing kept on a CUDA backend was given CPU tensors")
}
