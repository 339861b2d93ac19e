//! Where a tensor lives. The CPU is always there; a CUDA device is asked for by ordinal and may be
//! missing, which is an error value, never a panic or a link failure.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
    /// The CUDA kernels run on the SIMT emulator (`cuda/emu/`, on the CPU): every CUDA code path
    /// without a GPU. Slow; for tests and small runs.
    Emu,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Emu => write!(f, "emu"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = crate::Error;

    /// Parses `cpu`, `cuda` (ordinal 0), `cuda:N` or `emu` (the CUDA kernels on the emulator).
    fn from_str(s: &str) -> crate::Result<Self> {
        let bad = || crate::Error::invalid("device", format!("`{s}` is not a device (expected `cpu`, `cuda`, `cuda:N` or `emu`)"));
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "emu" => Ok(Device::Emu),
            "cuda" => Ok(Device::Cuda(0)),
            other => {
                let n = other.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl serde::Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: crate::Error| serde::de::Error::custom(e.to_string()))
    }
}

impl Device {
    /// Whether tensors on this device are run by the CUDA kernels (on a GPU or the emulator).
    pub fn is_cuda(self) -> bool {
        !matches!(self, Device::Cpu)
    }

    /// Checks that the device can be used right now: the CPU always; a CUDA ordinal only when the
    /// driver loads and the ordinal exists.
    pub fn check_available(self) -> crate::Result<()> {
        match self {
            Device::Cpu | Device::Emu => Ok(()),
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
