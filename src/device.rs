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

/// Bytes of memory the host can still give to this process without swapping (`MemAvailable` of
/// `/proc/meminfo`); `None` where the platform does not say.
pub fn host_memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.trim_start_matches("MemAvailable:").trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// An error naming `what` when `bytes` cannot fit in the host's available memory: asking the
/// allocator for it would abort the process rather than return an error.
pub fn check_host_memory(bytes: u64, what: &str) -> crate::Result<()> {
    match host_memory_available() {
        Some(avail) if bytes > avail => Err(crate::Error::invalid(
            "memory",
            format!("{what} need {:.1} GiB, but this machine has {:.1} GiB available", gib(bytes), gib(avail)),
        )),
        _ => Ok(()),
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Most threads a CPU pool may be asked for. Far above any core count; a larger number is a typo,
/// and spawning it would stall the process rather than fail.
pub const MAX_CPU_THREADS: usize = 1024;

/// A rayon pool of `threads` threads (0: rayon's default, one per core). `what` names the setting
/// in errors (`--threads`, `[latency] threads`).
pub fn cpu_pool(threads: usize, what: &str) -> crate::Result<rayon::ThreadPool> {
    if threads > MAX_CPU_THREADS {
        return Err(crate::Error::invalid("threads", format!("{what} = {threads} is above the limit of {MAX_CPU_THREADS}")));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| crate::Error::invalid("threads", format!("{what}: cannot start {threads} threads: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_from_meminfo() {
        let text = "MemTotal:       24580000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_mem_available(text), Some(20_000_000 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: lots\n"), None);
    }

    #[test]
    fn more_than_the_machine_has_is_an_error_naming_it() {
        if host_memory_available().is_none() {
            eprintln!("skipped: this platform does not report available memory");
            return;
        }
        let msg = check_host_memory(u64::MAX / 2, "the supernet's parameters").unwrap_err().to_string();
        assert!(msg.contains("the supernet's parameters need") && msg.contains("GiB available"), "{msg}");
        assert!(check_host_memory(1 << 20, "one MiB").is_ok());
    }

    #[test]
    fn thread_counts_past_the_limit_are_errors() {
        let e = cpu_pool(MAX_CPU_THREADS + 1, "--threads").expect_err("over the limit").to_string();
        assert!(e.contains("--threads = 1025") && e.contains("limit"), "{e}");
        assert_eq!(cpu_pool(3, "--threads").unwrap().current_num_threads(), 3);
    }
}
