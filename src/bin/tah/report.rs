//! What `tah bench --report` says about the machine: the CPU (model, the
//! features the kernels care about, cores), the kernel tables this CPU can run
//! and the one chosen, so a Pi or phone owner can post figures from hardware
//! the project does not have.

use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Serialize)]
pub struct Machine {
    /// `x86_64`, `aarch64`, ...
    pub arch: &'static str,
    pub os: &'static str,
    /// The CPU's name (x86: cpuinfo's "model name"), "" where unknown.
    pub cpu: String,
    /// The board (Raspberry Pi: cpuinfo's "Model" or the device tree's), "" where unknown.
    pub board: String,
    /// aarch64: the distinct "CPU part" ids of the cores (0xd0b = Cortex-A76,
    /// 0xd08 = A72, 0xd03 = A53, ...), big and little cores both.
    pub cpu_parts: Vec<String>,
    /// The features the kernels choose by, as this CPU reports them.
    pub features: Vec<&'static str>,
    pub cores: usize,
    /// The kernel tables this CPU can run, best last, and the one in use
    /// (`TAH_KERNELS` can pick another).
    pub kernels_available: Vec<&'static str>,
    pub kernels: &'static str,
    pub tah_version: &'static str,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        // every value of a "name : value" line called `name`
        let values = |name: &'static str| {
            cpuinfo.lines().filter_map(move |l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let field = |name: &'static str| values(name).next();
        let parts: BTreeSet<String> = values("CPU part").collect();
        let board = field("Model")
            .or_else(|| {
                let m = std::fs::read("/proc/device-tree/model").ok()?;
                Some(
                    String::from_utf8_lossy(&m)
                        .trim_end_matches('\0')
                        .to_string(),
                )
            })
            .unwrap_or_default();
        Machine {
            arch: std::env::consts::ARCH,
            os: std::env::consts::OS,
            cpu: field("model name").unwrap_or_default(),
            board,
            cpu_parts: parts.into_iter().collect(),
            features: features(),
            cores: tah::threads::cores(),
            kernels_available: tah::kernels::available().iter().map(|k| k.name).collect(),
            kernels: tah::kernels::kernels().name,
            tah_version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// The CPU features that decide the kernel table (and a few that future ones
/// may use), those this CPU has.
#[cfg(target_arch = "x86_64")]
fn features() -> Vec<&'static str> {
    macro_rules! have {
        ($($f:tt),*) => {
            [$(($f, std::arch::is_x86_feature_detected!($f))),*]
        };
    }
    have!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avxvnni",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16"
    )
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect()
}

#[cfg(target_arch = "aarch64")]
fn features() -> Vec<&'static str> {
    macro_rules! have {
        ($($f:tt),*) => {
            [$(($f, std::arch::is_aarch64_feature_detected!($f))),*]
        };
    }
    have!("neon", "fp16", "dotprod", "i8mm", "bf16", "sve")
        .into_iter()
        .filter_map(|(f, on)| on.then_some(f))
        .collect()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn features() -> Vec<&'static str> {
    Vec::new()
}
