//! The object JavaScript holds: an [`Engine`] owns its compute device and its loaded model (no
//! globals), and each method takes bytes or samples and returns a plain JS object
//! (serde-wasm-bindgen, camelCase fields) or a `Promise` of one. A failure throws (or rejects with)
//! an `Error` whose `kind` property says whose problem it is: `audio`, `too-short`,
//! `unsupported-wav`, `model`, `backend`, `non-finite` or `state`.

use std::cell::RefCell;
use std::rc::Rc;

use burn::prelude::*;
use duet_model::backend::{self, BackendInfo};
use duet_model::timeline::{self, TimelineConfig};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::model::{self, AnalysisError, Loaded};

// The linker's constructors (cubecl registers its IR dialects through `inventory`). A wasm module
// none of whose exports calls them is linked "command-style": wasm-ld then prepends a call to them to
// every export, so each call from JavaScript into the module (an analysis's result is built with
// hundreds) ran all of them again. Calling them once from the start function below turns that off.
#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

#[wasm_bindgen(start)]
pub fn start() {
    // SAFETY: wasm-bindgen runs the start function once, right after instantiation and before any
    // other export, which is when the linker's constructors expect to run.
    #[cfg(target_arch = "wasm32")]
    unsafe {
        __wasm_call_ctors();
    }
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

fn model_error(e: duet_model::ModelError) -> JsValue {
    analysis_error(e.into())
}

fn analysis_error(e: AnalysisError) -> JsValue {
    error(e.kind(), &e.to_string())
}

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| error("state", &format!("serialising a result: {e}")))
}

/// A compute backend and the model loaded on it. Moving to another backend (after a GPU loss) is a
/// new `Engine`; the old one's memory goes with it (`free()`).
#[wasm_bindgen]
pub struct Engine {
    device: Device,
    info: BackendInfo,
    /// The current model; each analysis holds its own `Rc` of it (its future outlives the `&self`
    /// borrow), so loading another model mid-analysis is safe.
    model: RefCell<Option<Rc<RefCell<Loaded>>>>,
}

#[wasm_bindgen]
impl Engine {
    /// An engine on WebGPU when `prefer_gpu` and the browser offers an adapter, else on the CPU
    /// backend; see [`Engine::backend`] for which and why.
    pub async fn create(prefer_gpu: bool) -> Engine {
        let (device, info) = backend::init_async(prefer_gpu).await;
        Engine {
            device,
            info,
            model: RefCell::new(None),
        }
    }

    /// `{kind, adapter, fallbackReason?}` of this engine's backend.
    pub fn backend(&self) -> Result<JsValue, JsValue> {
        to_js(&self.info)
    }

    /// Runs a small matmul on the backend; resolves to its result (480 when correct).
    #[wasm_bindgen(js_name = smokeTest)]
    pub fn smoke_test(&self) -> js_sys::Promise {
        let device = self.device.clone();
        future_to_promise(async move {
            let data = backend::smoke_matmul(&device)
                .into_data_async()
                .await
                .map_err(|e| error("backend", &format!("reading the self-test result: {e:?}")))?;
            let v: Vec<f32> = data
                .try_to_vec::<f32>()
                .map_err(|e| error("backend", &format!("self-test result dtype: {e:?}")))?;
            Ok(JsValue::from_f64(v[0] as f64))
        })
    }

    /// Reads a weights file's model card (kind, classes, provenance...) without loading it.
    #[wasm_bindgen(js_name = describeModel)]
    pub fn describe_model(bytes: &[u8]) -> Result<JsValue, JsValue> {
        let info = model::describe(bytes).map_err(|e| error("model", &e.to_string()))?;
        to_js(&info)
    }

    /// Loads a weights file (`model.safetensors` from `train`) and makes it the current model;
    /// returns its model card. On failure the previous model stays loaded.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, bytes: &[u8]) -> Result<JsValue, JsValue> {
        let loaded =
            Loaded::new(bytes, &self.device).map_err(|e| error("model", &e.to_string()))?;
        let info = to_js(&loaded.info)?;
        *self.model.borrow_mut() = Some(Rc::new(RefCell::new(loaded)));
        Ok(info)
    }

    /// Analyses a WAV file (a `File` or any `Blob`) with duet-dsp's decoder and resampler (the
    /// samples `duet predict` sees). `timeline`: force the timeline on or off (default: on for audio
    /// longer than 8 s). `progress(done, total)`: called after each batch of the timeline's windows.
    ///
    /// A recording over [`timeline::WHOLE_MAX_S`] is read from the file a block at a time, as `duet
    /// predict` reads one from disk: the page then holds a block and a batch of windows whatever its
    /// length. A shorter one is read whole (after its header says it fits the worker's memory).
    /// Reading a file block by block needs `FileReaderSync`, which browsers give Web Workers only:
    /// call this from a worker (the page does).
    #[wasm_bindgen(js_name = analyzeFile)]
    pub fn analyze_file(
        &self,
        file: web_sys::Blob,
        timeline: Option<bool>,
        window_s: Option<f32>,
        hop_s: Option<f32>,
        progress: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let request = Request::new(timeline, window_s, hop_s, progress);
        self.with_model(move |loaded| async move {
            let file = BlobReader::new(file).map_err(read_error)?;
            let len = file.len;
            // Big reads: each is one call into the browser.
            let reader = std::io::BufReader::with_capacity(BLOB_BLOCK_BYTES, file.clone());
            let stream = duet_dsp::SampleStream::from_reader(reader, len)
                .map_err(|e| analysis_error(e.into()))?;
            let long = stream
                .expected_samples()
                .is_some_and(|n| !timeline::classified_whole(n, duet_dsp::SAMPLE_RATE));
            if long {
                return analyze_stream(loaded, stream, request).await;
            }
            drop(stream);
            let head = file.read_at(0, HEADER_BYTES).map_err(read_error)?;
            model::check_wav_fits(&head, len).map_err(analysis_error)?;
            let bytes = file.read_at(0, len as usize).map_err(read_error)?;
            let audio = duet_dsp::decode_wav_16k(&bytes).map_err(|e| analysis_error(e.into()))?;
            drop(bytes);
            let (rate, channels) = (audio.source_rate, audio.source_channels);
            analyze_16k(loaded, audio.samples, rate, channels, request).await
        })
    }

    /// Analyses decoded PCM: `planar` holds `channels` blocks of equal length (the browser's
    /// decodeAudioData output, or the microphone's mono frames) at `sample_rate`; mixed to mono and
    /// resampled to 16 kHz in wasm. `progress`: as for [`Engine::analyze_file`].
    #[wasm_bindgen(js_name = analyzePcm)]
    #[allow(clippy::too_many_arguments)] // the JS API's positional optional arguments
    pub fn analyze_pcm(
        &self,
        planar: Vec<f32>,
        channels: u32,
        sample_rate: u32,
        timeline: Option<bool>,
        window_s: Option<f32>,
        hop_s: Option<f32>,
        progress: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let request = Request::new(timeline, window_s, hop_s, progress);
        self.with_model(move |loaded| async move {
            let channels = channels.clamp(1, u16::MAX as u32) as u16;
            let mono = model::mix_planar(&planar, channels as usize);
            drop(planar);
            let samples =
                duet_dsp::to_16k(&mono, sample_rate).map_err(|e| analysis_error(e.into()))?;
            analyze_16k(loaded, samples, sample_rate, channels, request).await
        })
    }

    /// Runs the model once on half a second of synthetic audio so that the first real analysis
    /// does not pay for shader compilation (WebGPU) or first-touch allocations. Resolves to the
    /// time it took, in ms.
    #[wasm_bindgen(js_name = warmUp)]
    pub fn warm_up(&self) -> js_sys::Promise {
        self.time_chirp(0.5)
    }

    /// Milliseconds one analysis of a `seconds`-long synthetic clip takes on this engine (decode
    /// excluded): how the page compares its backends once both have warmed up.
    #[wasm_bindgen(js_name = timeForward)]
    pub fn time_forward(&self, seconds: f64) -> js_sys::Promise {
        self.time_chirp(seconds)
    }
}

impl Engine {
    /// Analyses a chirp of `seconds` (0.1 to 60) and resolves to the milliseconds it took.
    fn time_chirp(&self, seconds: f64) -> js_sys::Promise {
        self.with_model(move |loaded| async move {
            let t0 = js_sys::Date::now();
            let rate = duet_dsp::SAMPLE_RATE;
            let n = (seconds.clamp(0.1, 60.0) * f64::from(rate)) as usize;
            let samples: Vec<f32> = (0..n)
                .map(|i| {
                    let t = i as f32 / rate as f32;
                    0.2 * (std::f32::consts::TAU * (140.0 + 60.0 * t) * t).sin()
                })
                .collect();
            // Its output does not matter: a non-finite one (weights that overflow) is the
            // analyses' business, reported there.
            match analyze_16k(loaded, samples, rate, 1, Request::whole()).await {
                Err(e) if js_kind(&e).as_deref() == Some("non-finite") => {}
                r => {
                    r?;
                }
            }
            Ok(JsValue::from_f64(js_sys::Date::now() - t0))
        })
    }

    /// `analysis` of the loaded model as a Promise, rejected with a `state` error when no model is
    /// loaded.
    fn with_model<F, Fut>(&self, analysis: F) -> js_sys::Promise
    where
        F: FnOnce(Rc<RefCell<Loaded>>) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<JsValue, JsValue>> + 'static,
    {
        let loaded = self.loaded();
        future_to_promise(async move { analysis(loaded?).await })
    }

    fn loaded(&self) -> Result<Rc<RefCell<Loaded>>, JsValue> {
        self.model
            .borrow()
            .clone()
            .ok_or_else(|| error("state", "no model loaded: call loadModel() first"))
    }
}

/// Classifies a long WAV read a block at a time ([`duet_dsp::SampleStream`]): its timeline's
/// windows a batch at a time, its answer their mean (`duet predict`'s rule and code for files over
/// [`timeline::WHOLE_MAX_S`]).
async fn analyze_stream<R: std::io::Read>(
    loaded: Rc<RefCell<Loaded>>,
    mut stream: duet_dsp::SampleStream<R>,
    request: Request,
) -> Result<JsValue, JsValue> {
    let (sample_rate, channels) = (stream.format().sample_rate, stream.format().channels);
    let want = request.timeline.unwrap_or(true);
    let cfg = request.config();
    let rate = duet_dsp::SAMPLE_RATE;
    let total = stream
        .expected_samples()
        .map(|n| timeline::spans(n as usize, rate, &cfg).len())
        .unwrap_or(0);
    let predictor = loaded.borrow().predictor.clone();
    let mut windows = timeline::WindowBatches::new(rate, &cfg);
    let mut block = Vec::new();
    let mut more = true;
    while more {
        more = stream
            .next_block(&mut block)
            .map_err(|e| analysis_error(e.into()))?;
        {
            // Features on the CPU with the model borrowed; no borrow is held across the awaits.
            let mut l = loaded.borrow_mut();
            let Loaded {
                predictor, plan, ..
            } = &mut *l;
            windows.push(predictor, plan, &block).map_err(model_error)?;
            if !more {
                windows.end(predictor, plan).map_err(model_error)?;
            }
        }
        windows
            .classify_async(&predictor, |done| report(&request.progress, done, total))
            .await
            .map_err(model_error)?;
    }
    let duration_s = windows.samples_seen() as f32 / rate as f32;
    let segments = windows.finish();
    let whole = timeline::mean_of_windows(&predictor, &segments).map_err(model_error)?;
    let job = model::Job {
        duration_s,
        sample_rate,
        channels,
        whole: None,
        windows: Some(cfg),
    };
    let analysis = loaded.borrow().finish(&job, whole, segments, want);
    to_js(&analysis)
}

/// Bytes per read of a file analysed a block at a time: few calls into the browser, little memory.
const BLOB_BLOCK_BYTES: usize = 1 << 20;

/// Enough of a WAV file for its header chunks (what [`model::check_wav_fits`] reads).
const HEADER_BYTES: usize = 1 << 16;

/// A `File` or `Blob` read synchronously (`FileReaderSync`, a worker's) from any offset: the page's
/// files are read from the browser's handle a block at a time instead of held whole.
#[derive(Clone)]
struct BlobReader {
    blob: web_sys::Blob,
    reader: web_sys::FileReaderSync,
    len: u64,
    pos: u64,
}

impl BlobReader {
    fn new(blob: web_sys::Blob) -> std::io::Result<Self> {
        let reader = web_sys::FileReaderSync::new().map_err(js_io)?;
        let len = blob.size() as u64;
        Ok(BlobReader {
            blob,
            reader,
            len,
            pos: 0,
        })
    }

    /// Up to `n` bytes from `offset` (fewer at the file's end, none past it), as the browser's array.
    fn bytes_at(&self, offset: u64, n: usize) -> std::io::Result<js_sys::Uint8Array> {
        let end = offset.saturating_add(n as u64).min(self.len);
        if end <= offset {
            return Ok(js_sys::Uint8Array::new_with_length(0));
        }
        let part = self
            .blob
            .slice_with_f64_and_f64(offset as f64, end as f64)
            .map_err(js_io)?;
        let buffer = self.reader.read_as_array_buffer(&part).map_err(js_io)?;
        Ok(js_sys::Uint8Array::new(&buffer))
    }

    /// Up to `n` bytes from `offset`, copied into wasm memory.
    fn read_at(&self, offset: u64, n: usize) -> std::io::Result<Vec<u8>> {
        Ok(self.bytes_at(offset, n)?.to_vec())
    }
}

impl std::io::Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let bytes = self.bytes_at(self.pos, buf.len())?;
        let n = (bytes.length() as usize).min(buf.len());
        bytes.subarray(0, n as u32).copy_to(&mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_error(source: std::io::Error) -> JsValue {
    analysis_error(AnalysisError::Audio(duet_dsp::DspError::Io {
        path: "the file".into(),
        source,
    }))
}

/// A browser's refusal to read a file (it was deleted or changed since it was picked) as an I/O
/// error, which the decoder reports like a disk's.
fn js_io(e: JsValue) -> std::io::Error {
    let message = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "the browser could not read the file".into());
    std::io::Error::other(message)
}

/// Tells the page's progress callback, if any, that `done` of about `total` windows are classified.
fn report(progress: &Option<js_sys::Function>, done: usize, total: usize) {
    if let Some(f) = progress {
        // A progress display that throws is the page's business, not the analysis's.
        let _ = f.call2(
            &JsValue::NULL,
            &JsValue::from(done as u32),
            &JsValue::from(total.max(done) as u32),
        );
    }
}

/// What an analysis asks for beyond the samples (the JS API's optional arguments).
struct Request {
    /// Force the timeline on or off (default: on for audio longer than 8 s).
    timeline: Option<bool>,
    window_s: Option<f32>,
    hop_s: Option<f32>,
    /// Called with (windows done, windows in all) after each batch.
    progress: Option<js_sys::Function>,
}

impl Request {
    fn new(
        timeline: Option<bool>,
        window_s: Option<f32>,
        hop_s: Option<f32>,
        progress: Option<js_sys::Function>,
    ) -> Self {
        Request {
            timeline,
            window_s,
            hop_s,
            progress,
        }
    }

    /// The timeline's windows as asked (the defaults where not).
    fn config(&self) -> TimelineConfig {
        let defaults = TimelineConfig::default();
        TimelineConfig {
            window_s: self.window_s.unwrap_or(defaults.window_s),
            hop_s: self.hop_s.unwrap_or(defaults.hop_s),
            batch: defaults.batch,
        }
    }

    /// The whole signal alone.
    fn whole() -> Self {
        Request::new(Some(false), None, None, None)
    }
}

/// Classifies a 16 kHz signal: CPU features first (no await while the model is borrowed), then one
/// batch on the device for the whole utterance and the timeline's windows.
async fn analyze_16k(
    loaded: Rc<RefCell<Loaded>>,
    samples: Vec<f32>,
    sample_rate: u32,
    channels: u16,
    request: Request,
) -> Result<JsValue, JsValue> {
    let cfg = request.config();
    let Request {
        timeline, progress, ..
    } = request;
    let want = timeline.unwrap_or_else(|| model::wants_timeline(samples.len()));
    let job = loaded
        .borrow_mut()
        .prepare(&samples, sample_rate, channels, want.then_some(&cfg))
        .map_err(analysis_error)?;
    // The whole utterance alone (its length differs), then the equal-length windows a batch at a
    // time: features of one batch (CPU), then its device call. The predictor is an Rc: no RefCell
    // borrow is held across the awaits.
    let predictor = loaded.borrow().predictor.clone();
    let whole = match &job.whole {
        Some(prepared) => Some(
            predictor
                .predict_prepared_async(&[prepared])
                .await
                .map_err(|e| analysis_error(e.into()))?
                .remove(0),
        ),
        None => None,
    };
    // The windows a batch at a time: a batch's features (CPU, model borrowed), then its device call.
    let rate = duet_dsp::SAMPLE_RATE;
    let mut segments = Vec::new();
    if let Some(cfg) = &job.windows {
        let total = timeline::spans(samples.len(), rate, cfg).len();
        let mut windows = timeline::WindowBatches::new(rate, cfg);
        let mut pieces = samples.chunks(windows.piece_len()).peekable();
        while let Some(p) = pieces.next() {
            {
                let mut l = loaded.borrow_mut();
                let Loaded {
                    predictor, plan, ..
                } = &mut *l;
                windows.push(predictor, plan, p).map_err(model_error)?;
                if pieces.peek().is_none() {
                    windows.end(predictor, plan).map_err(model_error)?;
                }
            }
            windows
                .classify_async(&predictor, |done| report(&progress, done, total))
                .await
                .map_err(model_error)?;
        }
        segments = windows.finish();
    }
    drop(samples);
    let whole = match whole {
        Some(p) => p,
        None => timeline::mean_of_windows(&predictor, &segments).map_err(model_error)?,
    };
    let analysis = loaded.borrow().finish(&job, whole, segments, want);
    to_js(&analysis)
}
