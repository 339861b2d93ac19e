//! Where a tensor lives. The CPU is always there; a CUDA device is asked for by ordinal and may be
//! missing, which is an error value, never a panic or a link failure.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = crate::Error;

    /// Parses `cpu`, `cuda` (ordinal 0) or `cuda:N`.
    fn from_str(s: &str) -> crate::Result<Self> {
        let bad = || crate::Error::invalid("device", format!("`{s}` is not a device (expected `cpu`, `cuda` or `cuda:N`)"));
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => {
                let n = other.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl Device {
    /// Checks that the device can be used right now: the CPU always; a CUDA ordinal only when the
    /// driver loads and the ordinal exists.
    pub fn check_available(self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(i) => {
                let n = crate::cuda::device_count()?;
                if i < n {
                    Ok(())
                } else {
                    Err(crate::Error::NoCudaDevice { reason: format!("cuda:{i} requested but {n} device(s) present") })
                }
            }
        }
    }
}
