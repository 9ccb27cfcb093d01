//! The `train` command: arguments, progress bars, Ctrl-C, resume, report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use duet_data::protocol::Protocol;
use duet_data::{OnBadAudio, open_corpora};
use duet_dsp::Preset;
use duet_model::ModelKind;
use duet_model::config::UtteranceMean;
use duet_train::train::{self, EpochRecord, Observer, Outcome, RunDir, TrainOptions};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::cmd::Backend;

/// Arguments of `train`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The corpus: `iemocap:DIR` (the IEMOCAP release as distributed) or `manifest:FILE` (CSV or
    /// JSONL with path,label,speaker[,session]; EmoBox's key,wav,emo accepted). Repeat for several
    /// corpora in one run (speakers are kept apart by corpus name; see `--protocol cross-corpus`).
    #[arg(long, required_unless_present = "resume")]
    pub corpus: Vec<String>,
    /// Merge or rename labels of a manifest, e.g. `exc=happy,fru=` (empty target drops the label).
    #[arg(long)]
    pub label_map: Option<String>,
    /// Model kind (paper Table 1): base1 base2 base3 base4 base5 base6 ds-lstm dual.
    #[arg(long, default_value = "dual", value_parser = crate::cmd::init_model::parse_kind)]
    pub model: ModelKind,
    /// `paper` (the paper's spectrogram sizes, median resize) or `authors` (the authors' code).
    #[arg(long, default_value = "paper", value_parser = crate::cmd::parse_preset)]
    pub preset: Preset,
    /// `loso` (leave one session out: speaker-independent), `random5` (the paper's random 5-fold,
    /// speaker-dependent), `holdout:SESSION`, `speakers:K` (K folds of disjoint speaker groups, for
    /// corpora without sessions) or `cross-corpus` (test on each corpus, train on the others).
    #[arg(long, default_value = "loso", value_parser = parse_protocol)]
    pub protocol: Protocol,
    /// Epochs per fold.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Adam learning rate (the paper: 1e-4).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Halve the learning rate at these epochs, e.g. `10,20,30` (the authors' schedule).
    #[arg(long, value_delimiter = ',')]
    pub lr_milestones: Vec<usize>,
    /// Seed of initialisation, shuffling and random folds.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to train: a GPU through wgpu when there is one (auto), or the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// Pick each fold's best epoch on its TEST data, as the authors' code did (optimistic: the
    /// report marks the numbers so).
    #[arg(long)]
    pub select_on_test: bool,
    /// What to do with audio that cannot be decoded: `fail` (default) or `skip` (counted in the report).
    #[arg(long, default_value = "fail", value_parser = crate::cmd::parse_bad_audio)]
    pub on_bad_audio: OnBadAudio,
    /// Hidden units of every LSTM / DS-LSTM layer (the paper: 200).
    #[arg(long, default_value_t = 200)]
    pub hidden: usize,
    /// Run only the first N folds (quick experiments; the report lists the folds run).
    #[arg(long)]
    pub max_folds: Option<usize>,
    /// Skip training the final model on all data (no model.safetensors).
    #[arg(long)]
    pub no_final: bool,
    /// Store model.safetensors' matrices in half precision: half the size (the page's bundled model
    /// is stored so); probabilities move by less than 1e-3.
    #[arg(long)]
    pub f16: bool,
    /// The run directory (model.safetensors, report.*, folds/ with each fold's model, checkpoint/,
    /// cache/).
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in RUN_DIR (or --out) from its last checkpoint, with its original options.
    #[arg(long, num_args = 0..=1, value_name = "RUN_DIR", default_missing_value = "")]
    pub resume: Option<PathBuf>,
    /// Normalise each utterance's level to this many dBFS (its 90th-percentile frame) before the
    /// features, in training and wherever the model is used (stored in the model file). `off` (the
    /// paper) by default; -20 for models meant for any microphone.
    #[arg(long, default_value = "off", value_parser = parse_level, allow_hyphen_values = true)]
    pub level_norm: LevelArg,
    /// Augmented copies of each training utterance (random gain, noise at 5-30 dB SNR, speed
    /// ×0.9-1.1, room reverb; seeded by --seed, the same in every fold). Validation and test data are
    /// never augmented. 0 (default): none.
    #[arg(long, default_value_t = 0)]
    pub augment: usize,
    /// Mask a stretch of frames and a range of mel bands of each training utterance every time it
    /// enters a batch (SpecAugment; replaced by the utterance's means, seeded by --seed). Validation,
    /// test and every later use of the model see the features unchanged.
    #[arg(long)]
    pub spec_augment: bool,
    /// Standardise each MFCC value, (x − mean) / std, with the statistics of the training part's
    /// frames, in training and wherever the model is used (stored in the model file). Off (the
    /// paper: the frames enter the MLSTM as they are) by default.
    #[arg(long)]
    pub mfcc_standardise: bool,
    /// Subtract each utterance's own mean from its MFCC frames (`mfcc`), from each mel band of its
    /// spectrograms (`spectrograms`) or from both, in training and wherever the model is used
    /// (stored in the model file): what a microphone or a vocal tract adds to every frame alike.
    /// Off (the paper) by default.
    #[arg(long, value_name = "WHAT", value_parser = parse_utterance_mean)]
    pub utterance_mean: Option<UtteranceMean>,
    /// Cut the silence before and after the speech of each utterance, in training and wherever
    /// the model is used (stored in the model file): frames more than 30 dB below the utterance's
    /// loudest frame or within 6 dB of its noise floor, at either end, keeping 0.1 s of margin. Off
    /// (the paper: the whole recording) by default.
    #[arg(long)]
    pub trim_silence: bool,
    /// Report and export the mean of the weights after each of the last N epochs (batch-norm
    /// statistics included) instead of the epoch chosen on validation, which a few validation
    /// speakers make noisy; validation then only fits the temperature. 0 (default): choose an epoch.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        conflicts_with = "select_on_test"
    )]
    pub average_last: usize,
    /// Store in the model file that a recording whose speech stands less than DB above its noise
    /// floor is shown as noisy (by the page, `duet predict` and `duet eval`). Measure where the
    /// model's answers start to fail (e.g. tests/reference/channel.py's white-noise channels on
    /// speakers it never heard). Default: none stored, so 30 dB, where models trained on quiet
    /// studio speech fail; one trained with `--augment` keeps its answers further down.
    #[arg(long, value_name = "DB")]
    pub noisy_below: Option<f32>,
    /// Decoupled weight decay λ (AdamW, as PyTorch applies it): every step each weight matrix and
    /// convolution kernel shrinks by lr·λ of itself before the Adam update; biases and batch-norm
    /// parameters are not decayed. 0 (default, the paper): plain Adam.
    #[arg(long, default_value_t = 0.0, value_name = "LAMBDA")]
    pub weight_decay: f64,
    /// Weigh each class's loss by N / (C · n_c) over the fold's training part (every class counts
    /// alike whatever its share; UA weighs classes alike too). Off by default (the paper).
    #[arg(long)]
    pub balance_classes: bool,
    /// A note for the model file's provenance, `KEY=VALUE` (repeatable), e.g. the weights' license.
    #[arg(long, value_parser = parse_note)]
    pub note: Vec<(String, String)>,
    /// No progress bars (log lines instead).
    #[arg(long)]
    pub quiet: bool,
    /// Stop after N batches of this invocation as Ctrl-C would (a checkpoint, exit code 130;
    /// continue with `--resume`): a run in slices of a time-limited job.
    #[arg(long, value_name = "N")]
    pub stop_after_batches: Option<usize>,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).map_err(|e| e.to_string())
}

/// `--level-norm`: off, or a target in dBFS.
#[derive(Clone, Copy, Debug)]
pub struct LevelArg(pub Option<duet_dsp::LevelNorm>);

fn parse_level(s: &str) -> Result<LevelArg, String> {
    if s == "off" {
        return Ok(LevelArg(None));
    }
    let db: f32 = s
        .parse()
        .map_err(|_| format!("`{s}`: expected `off` or a level in dBFS such as -20"))?;
    let level = duet_dsp::LevelNorm {
        target_dbfs: db,
        ..duet_dsp::LevelNorm::speech()
    };
    level.validate()?;
    Ok(LevelArg(Some(level)))
}

fn parse_utterance_mean(s: &str) -> Result<UtteranceMean, String> {
    UtteranceMean::from_name(s).ok_or_else(|| {
        format!(
            "`{s}`: expected one of {}",
            UtteranceMean::NAMES.map(|n| format!("`{n}`")).join(", ")
        )
    })
}

fn parse_note(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}`: expected KEY=VALUE")),
    }
}

/// What `--resume` needs besides the checkpoint: the corpus and how to reach the device.
#[derive(Serialize, Deserialize)]
struct RunSpec {
    corpus: Vec<String>,
    label_map: Option<String>,
    backend: Backend,
}

struct Bars {
    multi: MultiProgress,
    epoch: std::sync::Mutex<Option<ProgressBar>>,
    features: std::sync::Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Bars {
    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .expect("valid template")
            .progress_chars("=> ")
    }
}

impl Observer for Bars {
    fn features(&self, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        let mut g = self.features.lock().unwrap_or_else(|p| p.into_inner());
        let bar = g.get_or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(total as u64));
            b.set_style(Bars::style());
            b.set_prefix("features");
            b
        });
        bar.set_position(done as u64);
        if done == total {
            bar.finish_with_message("done");
        }
    }

    fn epoch_start(&self, fold: &str, epoch: usize, epochs: usize, batches: usize) {
        if self.quiet {
            return;
        }
        let b = self.multi.add(ProgressBar::new(batches as u64));
        b.set_style(Bars::style());
        b.set_prefix(format!("{fold} {epoch}/{epochs}"));
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
    }

    fn batch(&self, loss: f64) {
        if let Some(b) = self
            .epoch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            b.inc(1);
            b.set_message(format!("loss {loss:.3}"));
        }
    }

    fn epoch_end(&self, fold: &str, r: &EpochRecord) {
        let line = format!(
            "{fold} epoch {:>3}: loss {:.4}  valid WA {:>5} UA {:>5}  test WA {:>5} UA {:>5}  ({:.1} s)",
            r.epoch,
            r.train_loss,
            pct(r.valid_wa),
            pct(r.valid_ua),
            pct(r.test_wa),
            pct(r.test_ua),
            r.seconds
        );
        match self.epoch.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(b) => {
                b.finish_and_clear();
                self.line(&line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn message(&self, text: &str) {
        self.line(text);
    }
}

impl Bars {
    /// A line above the bars; on stderr itself when the bars are not drawn (`--quiet`, or stderr is
    /// not a terminal), where indicatif's `println` would drop it.
    fn line(&self, text: &str) {
        if self.quiet || self.multi.is_hidden() {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}%", 100.0 * v)
    } else {
        "—".into()
    }
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `train`; returns exit code 130 after an interrupt (checkpoint written).
pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let resume_dir = match args.resume.take() {
        Some(p) if p.as_os_str().is_empty() => Some(
            args.out
                .clone()
                .context("--resume needs a RUN_DIR (or --out)")?,
        ),
        Some(p) => Some(p),
        None => None,
    };
    let (out, options, spec) = match &resume_dir {
        Some(dir) => {
            let run = RunDir { root: dir.clone() };
            if !train::has_checkpoint(&run) {
                bail!(
                    "{}: no checkpoint to resume from (expected {}/checkpoint/state.json; a run \
                     writes its first at the end of its first epoch): run the original train \
                     command again with the same --out",
                    dir.display(),
                    dir.display()
                );
            }
            let options = train::checkpoint_options(&run)
                .with_context(|| format!("reading the checkpoint in {}", dir.display()))?;
            let spec_path = dir.join("run.json");
            let spec: RunSpec = serde_json::from_slice(
                &std::fs::read(&spec_path)
                    .with_context(|| format!("cannot read {}", spec_path.display()))?,
            )
            .with_context(|| format!("{} is not valid", spec_path.display()))?;
            (dir.clone(), options, spec)
        }
        None => {
            let out = args.out.clone().context("--out RUN_DIR is required")?;
            let mut o = TrainOptions::new(args.model, args.preset);
            o.protocol = args.protocol.clone();
            o.epochs = args.epochs;
            o.batch = args.batch;
            o.lr = args.lr;
            o.lr_milestones = args.lr_milestones.clone();
            o.seed = args.seed;
            o.select_on_test = args.select_on_test;
            o.on_bad_audio = args.on_bad_audio;
            o.hidden = args.hidden;
            o.final_model = !args.no_final;
            o.max_folds = args.max_folds;
            o.f16 = args.f16;
            o.level = args.level_norm.0;
            o.augment = args.augment;
            o.spec_augment = args.spec_augment;
            o.mfcc_standardise = args.mfcc_standardise;
            o.utterance_mean = args.utterance_mean;
            o.silence_trim = args.trim_silence.then(duet_dsp::SilenceTrim::speech);
            o.average_last = args.average_last;
            o.noisy_below_db = args.noisy_below;
            o.weight_decay = args.weight_decay;
            o.balance_classes = args.balance_classes;
            if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
                bail!("--weight-decay must be a number of 0 or more");
            }
            if let Some(db) = o.noisy_below_db
                && !(0.0..=100.0).contains(&db)
            {
                bail!("--noisy-below {db} must be within 0..100 dB");
            }
            o.notes = args.note.iter().cloned().collect();
            if o.epochs == 0 || o.batch < 2 {
                bail!(
                    "--epochs must be at least 1 and --batch at least 2 (batch norm needs two examples)"
                );
            }
            if o.average_last > o.epochs {
                bail!(
                    "--average-last {} is more than --epochs {}: it averages the weights of the last N epochs",
                    o.average_last,
                    o.epochs
                );
            }
            if !(o.lr > 0.0 && o.lr.is_finite()) {
                bail!("--lr must be a positive number");
            }
            let spec = RunSpec {
                corpus: if args.corpus.is_empty() {
                    bail!("--corpus is required")
                } else {
                    args.corpus.clone()
                },
                label_map: args.label_map.clone(),
                backend: args.backend,
            };
            (out, o, spec)
        }
    };
    duet_data::ensure_writable_dir(&out)?;
    let run_dir = RunDir { root: out.clone() };
    if resume_dir.is_none() && train::has_checkpoint(&run_dir) {
        bail!(
            "{} already holds a run (checkpoint/): continue it with `train --resume {}`, or choose another --out",
            out.display(),
            out.display()
        );
    }
    std::fs::write(out.join("run.json"), serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("cannot write {}", out.join("run.json").display()))?;

    let corpus = open_corpora(&spec.corpus, spec.label_map.as_deref())
        .with_context(|| format!("corpus {}", spec.corpus.join(" ")))?;
    let (device, info) = spec.backend.device();
    let quiet = args.quiet;
    let bars = Bars {
        multi: MultiProgress::new(),
        epoch: Default::default(),
        features: Default::default(),
        quiet,
    };
    if quiet {
        bars.multi
            .set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    eprintln!(
        "{}; {} speakers, {} sessions; {} on {} ({}){}",
        corpus.corpora_summary(),
        corpus.speakers().len(),
        corpus.sessions().len(),
        options.kind,
        info.kind,
        info.adapter,
        info.fallback_reason
            .as_deref()
            .map(|r| format!(" — {r}"))
            .unwrap_or_default()
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!(
                "\nCtrl-C: finishing the current batch, then writing a checkpoint (Ctrl-C again to abort)"
            );
        });
    }
    let stop_after = args.stop_after_batches;
    let counting = CountingObserver {
        inner: &bars,
        stop: stop.clone(),
        remaining: std::sync::atomic::AtomicUsize::new(stop_after.unwrap_or(usize::MAX)),
    };
    let started = chrono_like_now();
    let outcome = train::run(
        &corpus,
        &options,
        &run_dir,
        &device,
        &format!("{} ({})", info.kind, info.adapter),
        resume_dir.is_some(),
        &stop,
        &counting,
    )?;
    match outcome {
        Outcome::Interrupted { checkpoint } => {
            eprintln!(
                "interrupted: checkpoint written to {}; continue with `train --resume {}`",
                checkpoint.display(),
                out.display()
            );
            Ok(ExitCode::from(130))
        }
        Outcome::Finished(result) => {
            let info = duet_train::report::RunInfo {
                git_revision: git_revision(),
                command,
                started,
                corpus: &corpus,
            };
            duet_train::report::write(&out, &options, &result, &info)?;
            let s = &result.summary;
            eprintln!(
                "\n{} folds ({}): WA {:.1} ± {:.1} %, UA {:.1} ± {:.1} %, macro-F1 {:.1} %{}",
                s.folds,
                options.protocol,
                100.0 * s.wa.mean,
                100.0 * s.wa.std,
                100.0 * s.ua.mean,
                100.0 * s.ua.std,
                100.0 * s.macro_f1.mean,
                if options.select_on_test {
                    " (optimistic: epochs selected on test)"
                } else {
                    ""
                }
            );
            if let Some(p) = &result.model_path {
                eprintln!(
                    "model: {} (trained on all data for {} epochs)",
                    p.display(),
                    result.final_epochs.unwrap_or(0)
                );
            }
            eprintln!("report: {}", out.join("report.md").display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Counts batches and raises the stop flag after `remaining` of them (for tests of resume).
struct CountingObserver<'a> {
    inner: &'a Bars,
    stop: Arc<AtomicBool>,
    remaining: std::sync::atomic::AtomicUsize,
}

impl Observer for CountingObserver<'_> {
    fn features(&self, d: usize, t: usize) {
        self.inner.features(d, t)
    }
    fn epoch_start(&self, f: &str, e: usize, n: usize, b: usize) {
        self.inner.epoch_start(f, e, n, b)
    }
    fn batch(&self, loss: f64) {
        self.inner.batch(loss);
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
    fn epoch_end(&self, f: &str, r: &EpochRecord) {
        self.inner.epoch_end(f, r)
    }
    fn message(&self, t: &str) {
        self.inner.message(t)
    }
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ` (std only).
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
