//! The weights file (docs/weights.md): safetensors with the [`ModelConfig`] as JSON metadata.

use std::collections::{BTreeMap, HashMap};

use burn::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::model::DuetModel;
use crate::store::{FileSource, RandomSource, Sink};

/// Metadata key holding the [`ModelConfig`] JSON.
pub const CONFIG_KEY: &str = "duet.config";

/// Storage precision of a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Every tensor in single precision.
    F32,
    /// Half precision for matrices and kernels (vectors stay f32): about half the size;
    /// probabilities move by < 1e-3 (measured in the tests).
    F16,
}

/// The config and every tensor (as f32) of a weights file, validated against each other only when
/// the model is built.
pub struct WeightsFile {
    /// The model's configuration (`duet.config`).
    pub config: ModelConfig,
    /// Every tensor by name: shape and elements.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

fn format_err(e: safetensors::SafeTensorError) -> ModelError {
    ModelError::Format(match e {
        safetensors::SafeTensorError::HeaderTooSmall => {
            "the file is shorter than a safetensors header (empty or truncated)".into()
        }
        safetensors::SafeTensorError::MetadataIncompleteBuffer => {
            "the file is truncated: the header announces more data than the file holds".into()
        }
        other => format!("{other}"),
    })
}

/// Reads only the config (cheap: no tensor is decoded). For `duet info` and the page's model card.
pub fn read_config(bytes: &[u8]) -> Result<ModelConfig, ModelError> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(format_err)?;
    config_from_metadata(meta.metadata())
}

fn config_from_metadata(meta: &Option<HashMap<String, String>>) -> Result<ModelConfig, ModelError> {
    let json = meta
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| {
            ModelError::Metadata(format!(
                "missing: this safetensors file has no `{CONFIG_KEY}` metadata, so it is not a Duet model"
            ))
        })?;
    // Check the version before the rest, so a newer file says "upgrade" rather than "bad field".
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| ModelError::Metadata(format!("not valid JSON: {e}")))?;
    if let Some(v) = value.get("format_version").and_then(|v| v.as_u64())
        && v > crate::config::FORMAT_VERSION as u64
    {
        return Err(ModelError::Config {
            field: "format_version".into(),
            message: format!(
                "the file is format version {v} but this Duet reads up to version {}: upgrade Duet",
                crate::config::FORMAT_VERSION
            ),
        });
    }
    let config: ModelConfig =
        serde_json::from_value(value).map_err(|e| ModelError::Metadata(e.to_string()))?;
    config.validate()?;
    Ok(config)
}

fn to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>, ModelError> {
    let bytes = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        Dtype::F16 => Ok(bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        other => Err(ModelError::Tensor {
            name: name.into(),
            message: format!("dtype {other:?} is not supported (F32 or F16)"),
        }),
    }
}

/// Parses a weights file.
pub fn read(bytes: &[u8]) -> Result<WeightsFile, ModelError> {
    let st = SafeTensors::deserialize(bytes).map_err(format_err)?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(format_err)?;
    let config = config_from_metadata(meta.metadata())?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let data = to_f32(name, &view)?;
        tensors.insert(name.to_string(), (view.shape().to_vec(), data));
    }
    Ok(WeightsFile { config, tensors })
}

/// Builds the model stored in `bytes` on `device`. Every tensor must be present with the shape the
/// config implies, and no other tensor may be present.
pub fn load(bytes: &[u8], device: &Device) -> Result<DuetModel, ModelError> {
    let file = read(bytes)?;
    let mut src = FileSource::new(file.tensors);
    let model = DuetModel::build(file.config, &mut src, device)?;
    let left = src.leftover();
    if !left.is_empty() {
        return Err(ModelError::UnexpectedTensors {
            kind: model.config.kind.to_string(),
            names: left.join(", "),
        });
    }
    Ok(model)
}

/// A randomly initialised model (PyTorch's default inits, rbn weight 0.1 / bias 0 per paper §3.1),
/// deterministic for `seed`.
pub fn init(config: ModelConfig, seed: u64, device: &Device) -> Result<DuetModel, ModelError> {
    DuetModel::build(config, &mut RandomSource::new(seed), device)
}

struct F32View<'a> {
    shape: &'a [usize],
    bytes: Vec<u8>,
    dtype: Dtype,
}

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises a model (config in the metadata).
pub fn save(model: &DuetModel, precision: Precision) -> Result<Vec<u8>, ModelError> {
    let mut sink = Sink::default();
    model.export(&mut sink)?;
    let views: Vec<(String, F32View<'_>)> = sink
        .tensors
        .iter()
        .map(|t| {
            // F16 halves only matrices and kernels: vectors (biases, batch-norm scales and running
            // statistics) are <1% of the bytes but are where half precision moves outputs most.
            let half = precision == Precision::F16 && t.shape.len() >= 2;
            let (bytes, dtype) = match if half { Precision::F16 } else { Precision::F32 } {
                Precision::F32 => (
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    Dtype::F32,
                ),
                Precision::F16 => (
                    t.data
                        .iter()
                        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                        .collect(),
                    Dtype::F16,
                ),
            };
            (
                t.name.clone(),
                F32View {
                    shape: &t.shape,
                    bytes,
                    dtype,
                },
            )
        })
        .collect();
    let json =
        serde_json::to_string(&model.config).map_err(|e| ModelError::Metadata(e.to_string()))?;
    let meta = HashMap::from([(CONFIG_KEY.to_string(), json)]);
    safetensors::serialize(views, Some(meta)).map_err(|e| ModelError::Format(e.to_string()))
}

/// Whether a tensor name is a batch-norm running statistic (not a parameter).
pub fn is_statistic(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// Parameter counts per module (`mfcc.lstm.l0`, `ds.cnn_narrow`, `ds.head`...), running statistics
/// excluded, from tensor names and shapes.
pub fn parameter_counts<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize])>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (name, shape) in tensors {
        if is_statistic(name) {
            continue;
        }
        let parts: Vec<&str> = name.split('.').collect();
        // Group at the layer level for recurrent stacks (mfcc.lstm.l0), else at the block level.
        let depth = if parts.len() > 3 && (parts[1] == "lstm" || parts[1] == "dslstm") {
            3
        } else {
            2
        };
        let module = parts[..depth.min(parts.len() - 1)].join(".");
        *counts.entry(module).or_insert(0) += shape.iter().product::<usize>();
    }
    counts
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a rename, so
/// an interrupted write never leaves a complete-looking but truncated weights file.
#[cfg(not(target_family = "wasm"))]
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelKind;
    use crate::store::Sink;
    use duet_dsp::Preset;

    fn counts(kind: ModelKind, preset: Preset) -> (usize, BTreeMap<String, usize>) {
        let device = crate::backend::cpu_device();
        let model = init(ModelConfig::new(kind, preset), 1, &device).unwrap();
        let mut sink = Sink::default();
        model.export(&mut sink).unwrap();
        let c = parameter_counts(
            sink.tensors
                .iter()
                .map(|t| (t.name.as_str(), t.shape.as_slice())),
        );
        (c.values().sum(), c)
    }

    #[test]
    fn authors_dual_has_the_authors_parameter_count() {
        // docs/reference.md §1 / docs/weights.md §7: 3,732,296 = MFCC LSTM 515,204 + MDS-LSTM 3,217,092.
        let (total, c) = counts(ModelKind::Dual, Preset::Authors);
        assert_eq!(total, 3_732_296, "{c:#?}");
        assert_eq!(c["ds.dslstm.l0"], 1_747_200);
        assert_eq!(c["ds.dslstm.l1"], 1_451_200);
        assert_eq!(c["ds.cnn_narrow"] + c["ds.cnn_wide"], 17_888);
        assert_eq!(c["mfcc.lstm.l0"], 192_800);
        assert_eq!(c["mfcc.lstm.l1"], 321_600);
        assert_eq!(c["mfcc.head"], 804);
        assert_eq!(counts(ModelKind::DsLstm, Preset::Authors).0, 3_217_092);
        assert_eq!(counts(ModelKind::Base1, Preset::Authors).0, 515_204);
    }

    #[test]
    fn paper_cnn_counts_match_the_formula() {
        let (_, c) = counts(ModelKind::Base4, Preset::Paper);
        // 64·(4·4 + 1) + 2·64 + 16·(64·16 + 1) + 2·16 (docs/weights.md §7).
        assert_eq!(c["narrow.cnn"], 17_648);
        assert_eq!(c["wide.cnn"], 17_648);
    }
}
