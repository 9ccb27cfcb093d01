//! Backend choice: WebGPU/wgpu when an adapter exists, else burn's pure-Rust CPU backend (flex).

use burn::prelude::*;

/// Which compute backend a [`Device`] runs on, described for people (the page and `duet info`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendInfo {
    /// `"webgpu"` (browser GPU), `"wgpu"` (native GPU) or `"cpu"`.
    pub kind: String,
    /// Adapter name (GPU) or a description of the CPU backend.
    pub adapter: String,
    /// Why the GPU was not used, when the CPU was chosen although a GPU was wanted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// The CPU backend (flex: pure Rust, works everywhere including wasm32).
pub fn cpu_device() -> Device {
    Device::flex()
}

/// The kind of backend `device` runs on, as [`BackendInfo::kind`] names it: `"cpu"`, `"webgpu"`
/// (a browser's GPU) or `"wgpu"` (a native GPU). An autodiff device answers for the one it wraps.
pub fn kind_of(device: &Device) -> &'static str {
    if device.clone().without_autodiff() == cpu_device() {
        "cpu"
    } else if cfg!(target_family = "wasm") {
        "webgpu"
    } else {
        "wgpu"
    }
}

fn cpu_info(fallback_reason: Option<String>) -> BackendInfo {
    BackendInfo {
        kind: "cpu".into(),
        adapter: "burn flex (pure-Rust CPU)".into(),
        fallback_reason,
    }
}

fn gpu_info(kind: &str, setup: &burn::tensor::wgpu::WgpuSetup) -> BackendInfo {
    let info = setup.adapter.get_info();
    let adapter = if info.name.is_empty() {
        format!("{:?} adapter", info.backend)
    } else {
        format!("{} ({:?})", info.name, info.backend)
    };
    BackendInfo {
        kind: kind.into(),
        adapter,
        fallback_reason: None,
    }
}

/// Initialises a GPU through wgpu (WebGPU in browsers) when `prefer_gpu`, else or on failure the
/// CPU backend. Never fails: the reason for a fallback is reported in [`BackendInfo`].
pub async fn init_async(prefer_gpu: bool) -> (Device, BackendInfo) {
    if !prefer_gpu {
        return (cpu_device(), cpu_info(None));
    }
    let kind = if cfg!(target_family = "wasm") {
        "webgpu"
    } else {
        "wgpu"
    };
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => (device, gpu_info(kind, &setup)),
        Err(e) => (cpu_device(), cpu_info(Some(format!("no GPU adapter: {e}")))),
    }
}

/// Native counterpart of [`init_async`], blocking.
#[cfg(not(target_family = "wasm"))]
pub fn init_native(prefer_gpu: bool) -> (Device, BackendInfo) {
    if !prefer_gpu {
        return (cpu_device(), cpu_info(None));
    }
    match Device::wgpu_options().init_with_setup() {
        Ok((device, setup)) => (device, gpu_info("wgpu", &setup)),
        Err(e) => (cpu_device(), cpu_info(Some(format!("no GPU adapter: {e}")))),
    }
}

/// A small tensor computation that proves a backend works end to end: `sum(A·1)` where A holds
/// 0..16 as a 4x4 matrix and 1 is the 4x4 all-ones matrix. Each element of A is counted 4 times:
/// 4·(0+1+…+15) = 480 ([`SMOKE_MATMUL_EXPECTED`]).
pub fn smoke_matmul(device: &Device) -> Tensor<1> {
    let a = Tensor::<1, Int>::arange(0..16, device)
        .float()
        .reshape([4, 4]);
    let b = Tensor::<2>::ones([4, 4], device);
    a.matmul(b).sum()
}

/// Exact value of [`smoke_matmul`].
pub const SMOKE_MATMUL_EXPECTED: f32 = 480.0;

/// Runs `work` and counts the GPU kernels it launched (cubecl's launch observer; fusion's merged
/// kernels count once, the CPU backend launches none): the dispatch figure of the benchmarks.
#[cfg(not(target_family = "wasm"))]
pub fn count_dispatches<T>(work: impl FnOnce() -> T) -> (T, usize) {
    use cubecl::logging::{LaunchObservation, LaunchObserver};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl LaunchObserver for Count {
        fn launched(&self, _kernel: &'static str) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let watching = LaunchObservation::new(count.clone());
    let out = work();
    drop(watching);
    (out, count.0.load(Ordering::Relaxed))
}

/// The backends this machine can run, for the crate's tests: the CPU, and a GPU through wgpu when
/// there is an adapter (a real GPU, or a software Vulkan driver such as Mesa's lavapipe). Found once
/// per process: wgpu's runtime registers only once, so a second search would find no adapter.
#[cfg(all(test, not(target_family = "wasm")))]
pub(crate) fn available_devices() -> Vec<Device> {
    static DEVICES: std::sync::OnceLock<Vec<Device>> = std::sync::OnceLock::new();
    DEVICES
        .get_or_init(|| {
            let mut devices = vec![cpu_device()];
            let (gpu, info) = init_native(true);
            match info.fallback_reason {
                None => {
                    println!("backends: cpu, wgpu on {}", info.adapter);
                    devices.push(gpu);
                }
                Some(why) => println!("backends: cpu only ({why})"),
            }
            devices
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_of_names_the_backend() {
        assert_eq!(kind_of(&cpu_device()), "cpu");
        for d in available_devices().iter().skip(1) {
            assert_eq!(kind_of(d), "wgpu");
        }
    }

    #[test]
    fn smoke_matmul_on_cpu() {
        let v: Vec<f32> = smoke_matmul(&cpu_device())
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(v, vec![SMOKE_MATMUL_EXPECTED]);
    }
}
