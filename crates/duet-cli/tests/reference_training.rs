//! Training against the independent PyTorch model (`tests/reference/torch_model.py --train-steps`,
//! written from docs/weights.md without reading the Rust): from the same weights file and the
//! features `duet features` wrote, two steps of `duet_train::train::train_step` (training-mode
//! forward with batch statistics, masked padding, per-step recurrent batch norm, the fused loss,
//! backward, Adam) must give the losses and every tensor — parameters and running statistics — that
//! two steps of `torch.optim.Adam` give in float64, as closely as torch's own
//! float32 run does.
//!
//! Needs Python with numpy, safetensors and torch (`DUET_PYTHON`, else `target/venv/bin/python`,
//! both set up by `cargo xtask test`).

use std::collections::BTreeMap;
use std::process::Command;

use duet_dsp::{FeaturePlan, Preset, features_from_file};
use duet_model::input::{Prepared, prepare};
use duet_model::store::FileSource;
use duet_model::weights::{self, Precision};
use duet_model::{DuetModel, ModelConfig, ModelKind};
use duet_train::adam::{Adam, AdamConfig};
use duet_train::train::train_step;

use crate::common::{DUET, python, root, run};

#[test]
fn training_steps_match_torch() {
    let tmp = tempfile::tempdir().unwrap();
    // A small `dual` (both levels, so MFCC masking, the CNNs' and the DS-LSTM's batch norms all
    // train) on four real clips of different lengths.
    let mut config = ModelConfig::new(ModelKind::Dual, Preset::Paper);
    config.hidden = 12;
    let device = duet_model::backend::cpu_device().autodiff();
    let initial = weights::init(config.clone(), 3, &device).unwrap();
    let bytes = weights::save(&initial, Precision::F32).unwrap();
    let model_path = tmp.path().join("model.safetensors");
    std::fs::write(&model_path, &bytes).unwrap();
    let file = weights::read(&bytes).unwrap();
    let mut model =
        DuetModel::build(file.config, &mut FileSource::new(file.tensors), &device).unwrap();

    let clips = [
        "03-01-05-01-01-01-01.wav",
        "03-01-03-02-01-01-13.wav",
        "03-01-01-01-02-01-18.wav",
        "03-01-04-02-01-01-15.wav",
    ];
    let labels = [0usize, 1, 2, 3];
    let mut plan = FeaturePlan::new(&config.features);
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut dirs = Vec::new();
    for clip in clips {
        let wav = root().join("tests/fixtures/ravdess").join(clip);
        let features = features_from_file(&wav, &mut plan).unwrap();
        prepared.push(prepare(&features, &config).unwrap());
        let dir = tmp.path().join(clip);
        run(Command::new(DUET)
            .arg("features")
            .arg(&wav)
            .arg("--out")
            .arg(&dir)
            .args(["--preset", "paper"]));
        dirs.push(dir);
    }
    let frames: Vec<usize> = prepared.iter().map(|p| p.mfcc_frames).collect();
    assert!(
        frames.windows(2).any(|w| w[0] != w[1]),
        "the clips must differ in length so that padding is exercised: {frames:?}"
    );

    let lr = 1e-2;
    // Two steps: the second uses Adam's moments and bias correction; beyond that the DS branch's
    // f32 runs (torch's own too) drift apart chaotically from the float64 one.
    let steps: usize = 2;
    // Adam's first step moves a weight by lr·g/(|g| + eps): with the default eps (1e-8) a gradient
    // at rounding level (f32 here, f64 there) moves it by ±lr either way, so an element whose true
    // gradient is zero would differ by 2·lr for no fault. eps = 1e-3 bounds that sensitivity
    // (lr/eps per unit of gradient error) while every part of the update still counts.
    let adam_eps = 1e-3;
    let mut adam = Adam::new(AdamConfig {
        eps: adam_eps,
        ..AdamConfig::default()
    });
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let (next, loss) = train_step(model, &mut adam, &refs, &labels, &[], lr, &device).unwrap();
        model = next;
        losses.push(loss);
    }
    let ours = weights::read(&weights::save(&model, Precision::F32).unwrap()).unwrap();

    // Torch in float64 (the exact answer, near enough) and in float32 (how far f32 arithmetic
    // alone lands from it: the CNNs see dB images whose columns sit far from zero, and their
    // weight gradients cancel large terms).
    let torch = |dtype: &str| -> (Vec<f64>, BTreeMap<String, Vec<f64>>) {
        let out = run(Command::new(python())
            .arg(root().join("tests/reference/torch_model.py"))
            .arg("--model")
            .arg(&model_path)
            .args(["--train-steps", &steps.to_string(), "--lr", &lr.to_string()])
            .args(["--labels", "0,1,2,3", "--adam-eps", &adam_eps.to_string()])
            .args(["--dtype", dtype])
            .args(&dirs));
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let tensors = v["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), floats(t)))
            .collect();
        (floats(&v["losses"]), tensors)
    };
    let (their_losses, tensors) = torch("float64");
    let (_, tensors32) = torch("float32");
    for (i, (a, b)) in losses.iter().zip(&their_losses).enumerate() {
        assert!(
            (a - b).abs() < 1e-4 * (1.0 + b.abs()),
            "loss of step {} differs: ours {a}, torch {b}",
            i + 1
        );
    }
    assert_eq!(
        ours.tensors.keys().collect::<Vec<_>>(),
        tensors.keys().collect::<Vec<_>>(),
        "the two implementations hold different tensors"
    );
    // Per tensor, the change training made (after - before) against torch's float64 change:
    // |Δours - Δtorch| / |Δtorch| (L2 norms). A wrong gradient, a statistic updated with the
    // wrong momentum or variance, or a parameter one side does not train gives an error of order
    // one; f32 arithmetic gives what torch's own float32 run shows beside it.
    let before = weights::read(&bytes).unwrap();
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    let mut report = Vec::new();
    // A running statistic keeps (1 - momentum)^steps of its start; the rest is what the batches
    // contributed, and that is what must agree (else a small batch's variance correction hides
    // behind the decay of the start value).
    let decay = (1.0 - config.bn_momentum).powi(steps as i32);
    for (name, (_, values)) in &ours.tensors {
        let keep = if weights::is_statistic(name) {
            decay
        } else {
            1.0
        };
        let init: Vec<f64> = before.tensors[name]
            .1
            .iter()
            .map(|&v| v as f64 * keep)
            .collect();
        let exact = &tensors[name];
        let delta = norm(&mut exact.iter().zip(&init).map(|(e, i)| e - i));
        let err = |got: &mut dyn Iterator<Item = f64>| {
            norm(&mut got.zip(exact).map(|(g, e)| g - e)) / delta.max(1e-12)
        };
        let ours_err = err(&mut values.iter().map(|&v| v as f64));
        let f32_err = err(&mut tensors32[name].iter().map(|&v| v as f32 as f64));
        report.push(format!(
            "{name}: |Δ| {delta:.2e}, error ours {ours_err:.2e}, torch f32 {f32_err:.2e}"
        ));
        if delta < 1e-9 {
            // Untrained by torch (a conv bias before a batch norm: its gradient is zero).
            let moved = norm(&mut values.iter().zip(&init).map(|(&v, i)| v as f64 - i));
            assert!(
                moved < 1e-6,
                "{name}: torch leaves it, ours moves it by {moved:.2e}"
            );
            continue;
        }
        assert!(
            ours_err < 0.05,
            "{name}: the training change differs from torch's by {ours_err:.2e} (torch's own \
             float32 run: {f32_err:.2e})\n{}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}
