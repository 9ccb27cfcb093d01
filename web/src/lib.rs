//! duet-web: the JavaScript-facing API of the page (wasm-bindgen). It only moves bytes in and results
//! out; every computation lives in duet-dsp and duet-model, shared with `duet predict` and `train`.

use std::cell::RefCell;

use burn::prelude::*;
use duet_model::backend;
use wasm_bindgen::prelude::*;

thread_local! {
    static DEVICE: RefCell<Option<Device>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

fn device() -> Result<Device, JsError> {
    DEVICE
        .with(|d| d.borrow().clone())
        .ok_or_else(|| JsError::new("backend not initialised: call initBackend() first"))
}

/// Initialise the compute backend: WebGPU when `prefer_gpu` and the browser offers an adapter,
/// else the CPU backend. Returns `{kind, adapter, fallbackReason?}`.
#[wasm_bindgen(js_name = initBackend)]
pub async fn init_backend(prefer_gpu: bool) -> Result<JsValue, JsError> {
    let (device, info) = backend::init_async(prefer_gpu).await;
    DEVICE.with(|d| *d.borrow_mut() = Some(device));
    Ok(serde_wasm_bindgen::to_value(&info)?)
}

/// Runs a small matmul on the active backend and returns its result (480 when correct).
#[wasm_bindgen(js_name = smokeTest)]
pub async fn smoke_test() -> Result<f32, JsError> {
    let device = device()?;
    let data = backend::smoke_matmul(&device)
        .into_data_async()
        .await
        .map_err(|e| JsError::new(&format!("reading result: {e:?}")))?;
    let v: Vec<f32> = data
        .try_to_vec::<f32>()
        .map_err(|e| JsError::new(&format!("result dtype: {e:?}")))?;
    Ok(v[0])
}

