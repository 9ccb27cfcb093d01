//! The functions JavaScript calls. Each takes bytes or samples and returns a plain JS object
//! (serde-wasm-bindgen, camelCase fields); a failure throws an `Error` whose `kind` property says
//! whose problem it is: `audio`, `too-short`, `unsupported-wav`, `model`, `backend`, `non-finite`
//! or `state`.

use std::cell::RefCell;
use std::rc::Rc;

use burn::prelude::*;
use duet_model::backend::{self, BackendInfo};
use duet_model::timeline::TimelineConfig;
use wasm_bindgen::prelude::*;

use crate::model::{self, AnalysisError, Loaded};

thread_local! {
    static DEVICE: RefCell<Option<Device>> = const { RefCell::new(None) };
    static MODEL: RefCell<Option<Rc<RefCell<Loaded>>>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// A JS `Error` with a `kind` property.
fn error(kind: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    let _ = js_sys::Reflect::set(&e, &"kind".into(), &kind.into());
    e.into()
}

fn js_kind(e: &JsValue) -> Option<String> {
    js_sys::Reflect::get(e, &"kind".into()).ok()?.as_string()
}

fn analysis_error(e: AnalysisError) -> JsValue {
    error(e.kind(), &e.to_string())
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| error("state", &format!("serialising a result: {e}")))
}

fn device() -> Result<Device, JsValue> {
    DEVICE
        .with(|d| d.borrow().clone())
        .ok_or_else(|| error("state", "backend not initialised: call initBackend() first"))
}

fn loaded() -> Result<Rc<RefCell<Loaded>>, JsValue> {
    MODEL
        .with(|m| m.borrow().clone())
        .ok_or_else(|| error("state", "no model loaded: call loadModel() first"))
}

/// Initialise the compute backend: WebGPU when `prefer_gpu` and the browser offers an adapter,
/// else the CPU backend. Returns `{kind, adapter, fallbackReason?}`.
#[wasm_bindgen(js_name = initBackend)]
pub async fn init_backend(prefer_gpu: bool) -> Result<JsValue, JsValue> {
    let (device, info): (Device, BackendInfo) = backend::init_async(prefer_gpu).await;
    DEVICE.with(|d| *d.borrow_mut() = Some(device));
    MODEL.with(|m| *m.borrow_mut() = None);
    to_js(&info)
}

/// Runs a small matmul on the active backend and returns its result (480 when correct).
#[wasm_bindgen(js_name = smokeTest)]
pub async fn smoke_test() -> Result<f32, JsValue> {
    let device = device()?;
    let data = backend::smoke_matmul(&device)
        .into_data_async()
        .await
        .map_err(|e| error("backend", &format!("reading the self-test result: {e:?}")))?;
    let v: Vec<f32> = data
        .try_to_vec::<f32>()
        .map_err(|e| error("backend", &format!("self-test result dtype: {e:?}")))?;
    Ok(v[0])
}

/// Reads a weights file's model card (kind, classes, provenance...) without loading it.
#[wasm_bindgen(js_name = describeModel)]
pub fn describe_model(bytes: &[u8]) -> Result<JsValue, JsValue> {
    let info = model::describe(bytes).map_err(|e| error("model", &e.to_string()))?;
    to_js(&info)
}

/// Loads a weights file (`model.safetensors` from `train`) on the active backend and makes it the
/// current model; returns its model card. On failure the previous model stays loaded.
#[wasm_bindgen(js_name = loadModel)]
pub fn load_model(bytes: &[u8]) -> Result<JsValue, JsValue> {
    let device = device()?;
    let loaded = Loaded::new(bytes, &device).map_err(|e| error("model", &e.to_string()))?;
    let info = to_js(&loaded.info)?;
    MODEL.with(|m| *m.borrow_mut() = Some(Rc::new(RefCell::new(loaded))));
    Ok(info)
}

/// Classifies a 16 kHz signal: CPU features first (no await while the model is borrowed), then one
/// batch on the device for the whole utterance and the timeline's windows.
async fn analyze_16k(
    samples: Vec<f32>,
    sample_rate: u32,
    channels: u16,
    timeline: Option<bool>,
    window_s: Option<f32>,
    hop_s: Option<f32>,
) -> Result<JsValue, JsValue> {
    let loaded = loaded()?;
    let want = timeline.unwrap_or_else(|| model::wants_timeline(samples.len()));
    let defaults = TimelineConfig::default();
    let cfg = TimelineConfig {
        window_s: window_s.unwrap_or(defaults.window_s),
        hop_s: hop_s.unwrap_or(defaults.hop_s),
        batch: defaults.batch,
    };
    let job = loaded
        .borrow_mut()
        .prepare(&samples, sample_rate, channels, want.then_some(&cfg))
        .map_err(analysis_error)?;
    drop(samples);
    let mut items = vec![&job.whole];
    items.extend(job.windows.iter().map(|(_, p)| p));
    // The whole utterance alone (its length differs), then the equal-length windows in batches.
    // The predictor is an Rc: no RefCell borrow is held across the awaits.
    let predictor = loaded.borrow().predictor.clone();
    let mut predictions = predictor
        .predict_prepared_async(&items[..1])
        .await
        .map_err(|e| analysis_error(e.into()))?;
    for chunk in items[1..].chunks(cfg.batch) {
        predictions.extend(
            predictor
                .predict_prepared_async(chunk)
                .await
                .map_err(|e| analysis_error(e.into()))?,
        );
    }
    let analysis = loaded.borrow().finish(&job, predictions, want);
    to_js(&analysis)
}

/// Analyses a WAV file's bytes with duet-dsp's decoder and resampler (the samples `duet predict`
/// sees). `timeline`: force the timeline on or off (default: on for audio longer than 8 s).
#[wasm_bindgen(js_name = analyzeWav)]
pub async fn analyze_wav(
    bytes: Vec<u8>,
    timeline: Option<bool>,
    window_s: Option<f32>,
    hop_s: Option<f32>,
) -> Result<JsValue, JsValue> {
    let (samples, rate, channels) =
        model::wav_to_16k(&bytes).map_err(|e| analysis_error(e.into()))?;
    drop(bytes);
    analyze_16k(samples, rate, channels, timeline, window_s, hop_s).await
}

/// Analyses decoded PCM: `planar` holds `channels` blocks of equal length (the browser's
/// decodeAudioData output, or the microphone's mono frames) at `sample_rate`; mixed to mono and
/// resampled to 16 kHz in wasm.
#[wasm_bindgen(js_name = analyzePcm)]
pub async fn analyze_pcm(
    planar: Vec<f32>,
    channels: u32,
    sample_rate: u32,
    timeline: Option<bool>,
    window_s: Option<f32>,
    hop_s: Option<f32>,
) -> Result<JsValue, JsValue> {
    let channels = channels.clamp(1, u16::MAX as u32) as u16;
    let mono = model::mix_planar(&planar, channels as usize);
    drop(planar);
    let samples = model::pcm_to_16k(&mono, sample_rate).map_err(|e| analysis_error(e.into()))?;
    analyze_16k(samples, sample_rate, channels, timeline, window_s, hop_s).await
}

/// Runs the model once on half a second of synthetic audio so that the first real analysis does not pay
/// for shader compilation (WebGPU) or first-touch allocations. Returns the time it took, in ms.
#[wasm_bindgen(js_name = warmUp)]
pub async fn warm_up() -> Result<f64, JsValue> {
    let t0 = js_sys::Date::now();
    let rate = duet_dsp::SAMPLE_RATE;
    let samples: Vec<f32> = (0..rate as usize / 2)
        .map(|i| {
            let t = i as f32 / rate as f32;
            0.2 * (std::f32::consts::TAU * (140.0 + 60.0 * t) * t).sin()
        })
        .collect();
    // Its output does not matter: a non-finite one (weights that overflow) is the analyses'
    // business, reported there.
    match analyze_16k(samples, rate, 1, Some(false), None, None).await {
        Err(e) if js_kind(&e).as_deref() == Some("non-finite") => {}
        r => {
            r?;
        }
    }
    Ok(js_sys::Date::now() - t0)
}
