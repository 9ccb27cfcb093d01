//! The fuzz targets' bodies (`fuzz/src/lib.rs`, run by `cargo xtask fuzz` under libFuzzer) replayed
//! on the stable toolchain: every saved finding (`fuzz/regressions/TARGET/`) and every committed seed
//! runs through its target without a panic, so a fixed finding stays fixed. The weights seeds must
//! also be models that load and analyse, so that the fuzzer starts from files that reach the model.

#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

use duet_dsp::Preset;
use duet_model::weights::{self, Precision};
use duet_model::{ModelConfig, ModelKind, Predictor};

use crate::common::root;

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !p.ends_with(".gitkeep"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn saved_fuzz_findings_and_seeds_replay_without_a_panic() {
    let mut replayed = 0;
    for (target, body) in harness::TARGETS {
        let mut inputs = files_in(&harness::regressions_dir(&root(), target));
        inputs.extend(files_in(&root().join("fuzz/seeds").join(target)));
        for input in inputs {
            let bytes = std::fs::read(&input).expect("reading a saved input");
            let result = std::panic::catch_unwind(|| body(&bytes));
            assert!(
                result.is_ok(),
                "fuzz target {target} panics on {}",
                input.display()
            );
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no saved input found under fuzz/");
}

/// Small models of several kinds and both presets: the weights target's seeds. Small so that the
/// fuzzer's mutations stay within its input size and each run is fast.
fn seed_models() -> Vec<(String, ModelConfig, Precision)> {
    let mut out = Vec::new();
    for (kind, preset, precision) in [
        (ModelKind::Base1, Preset::Paper, Precision::F32),
        (ModelKind::Base4, Preset::Authors, Precision::F16),
        (ModelKind::DsLstm, Preset::Paper, Precision::F32),
        (ModelKind::Dual, Preset::Authors, Precision::F16),
    ] {
        let mut c = ModelConfig::new(kind, preset);
        c.hidden = 3;
        c.layers = 1;
        c.cnn.channels = [2, 2];
        c.resize.narrow_frames = 40;
        c.resize.wide_frames = 20;
        let name = format!(
            "{}-{}-{}.safetensors",
            kind.name(),
            preset.name(),
            match precision {
                Precision::F32 => "f32",
                Precision::F16 => "f16",
            }
        );
        out.push((name, c, precision));
    }
    out
}

/// `DUET_WRITE_FUZZ_SEEDS=1` rewrites the seeds (after a change of the file format); otherwise each
/// committed seed must equal what the current code writes, load and analyse a clip.
#[test]
fn weights_seeds_are_current_models_that_analyse() {
    let dir = root().join("fuzz/seeds/weights");
    let device = duet_model::backend::cpu_device();
    let write = std::env::var_os("DUET_WRITE_FUZZ_SEEDS").is_some();
    for (name, config, precision) in seed_models() {
        let model = weights::init(config, 7, &device).expect("building a seed model");
        let bytes = weights::save(&model, precision).expect("saving a seed model");
        let path = dir.join(&name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (write the seeds with DUET_WRITE_FUZZ_SEEDS=1 cargo test -p duet-cli --test cli weights_seeds)",
                path.display()
            )
        });
        assert!(
            committed == bytes,
            "{name} is not what the current code writes: rewrite the seeds (DUET_WRITE_FUZZ_SEEDS=1)"
        );
        let predictor = Predictor::from_bytes(&committed, &device).expect("a seed loads");
        let mut plan = predictor.feature_plan();
        let clip: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.07).sin() * 0.3).collect();
        let features = plan.compute(&clip).expect("features of a tone");
        let p = predictor.predict(&features).expect("a seed analyses");
        assert_eq!(p.probabilities.len(), 4);
    }
}
