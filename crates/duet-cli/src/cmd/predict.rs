//! `duet predict FILE... [--model M] [--json] [--timeline] [--backend cpu|wgpu]`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use duet_dsp::{FeaturePlan, SAMPLE_RATE, SampleStream};
use duet_model::timeline::{self, Segment, TimelineConfig, WindowBatches};
use duet_model::{Prediction, Predictor};

use crate::cmd::Backend;

/// Arguments of `duet predict`.
#[derive(clap::Args)]
pub struct Args {
    /// Audio files (WAV).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The weights file (model.safetensors exported by `train`, or from `duet init-model`); the
    /// bundled model (the page's default, trained on RAVDESS) when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also classify each file in overlapping 3 s windows every 1.5 s (the page's timeline) and
    /// print each window. Files longer than 5 min are always analysed in windows, read from disk a
    /// block at a time (memory stays that of one batch of windows, however long the file): their
    /// overall answer is the mean of the windows' probabilities.
    #[arg(long)]
    pub timeline: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (predictor, _) = crate::cmd::load_predictor(args.model.as_deref(), args.backend)?;
    let uncertain_below = predictor
        .config()
        .calibration
        .as_ref()
        .map(|c| c.uncertain_below);
    let noisy_below_db = predictor.config().noisy_below_db();
    let classes = predictor.config().classes.clone();
    let mut plan = predictor.feature_plan();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.json {
        write!(out, "{:<40} {:>8}", "file", "dur (s)")?;
        for c in &classes {
            write!(out, " {c:>8}")?;
        }
        writeln!(out, "  label")?;
    }
    let mut failures = 0;
    let mut any_mean = false;
    let mut any_noisy = false;
    let mut any_uncertain = false;
    for file in &args.files {
        let (duration, p, how) = match analyse(&predictor, &mut plan, file, args.timeline) {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                eprintln!("error: {}: {}", file.display(), crate::error_chain(&e));
                continue;
            }
        };
        let (segments, mean) = match how {
            How::Whole(segments) => (segments, false),
            How::MeanOfWindows(segments) => (Some(segments), true),
        };
        any_mean |= mean;
        let shown = if args.timeline {
            segments.as_deref()
        } else {
            None
        };
        // The table's footnotes explain the marks shown, the timeline's rows included.
        for q in std::iter::once(&p).chain(shown.unwrap_or_default().iter().map(|s| &s.prediction))
        {
            any_noisy |= q.noisy;
            any_uncertain |= q.uncertain;
        }
        if args.json {
            let mut line = prediction_json(&classes, &p);
            let obj = line.as_object_mut().expect("an object");
            obj.insert("file".into(), file.display().to_string().into());
            obj.insert("duration_s".into(), serde_json::json!(duration));
            let summary = match &segments {
                Some(s) if mean => format!("mean of {} windows", s.len()),
                _ => "whole file".to_string(),
            };
            obj.insert("summary".into(), summary.into());
            if let Some(segments) = shown {
                let timeline: Vec<serde_json::Value> = segments
                    .iter()
                    .map(|s| {
                        let mut v = prediction_json(&classes, &s.prediction);
                        let obj = v.as_object_mut().expect("an object");
                        obj.insert("start_s".into(), serde_json::json!(s.start_s));
                        obj.insert("end_s".into(), serde_json::json!(s.end_s));
                        v
                    })
                    .collect();
                obj.insert("timeline".into(), timeline.into());
            }
            writeln!(out, "{line}")?;
        } else {
            let name = file.display().to_string();
            let mark = match &segments {
                Some(s) if mean => format!(" (mean of {} windows)", s.len()),
                _ => String::new(),
            };
            write_row(&mut out, &name, duration, &p, &mark)?;
            for s in shown.unwrap_or_default() {
                let span = format!("  {:.2}-{:.2} s", s.start_s, s.end_s);
                write_row(&mut out, &span, s.end_s - s.start_s, &s.prediction, "")?;
            }
        }
    }
    if !args.json
        && any_uncertain
        && let Some(t) = uncertain_below
    {
        writeln!(
            out,
            "(uncertain: the top probability is under {:.0} %, the model card's threshold)",
            100.0 * t
        )?;
    }
    if !args.json && any_noisy {
        writeln!(
            out,
            "(noisy: the speech stands less than {noisy_below_db} dB above the recording's noise \
             floor, where this model's answers are no longer reliable (its card's threshold))"
        )?;
    }
    if !args.json && any_mean && !args.timeline {
        writeln!(
            out,
            "(a file over {:.0} min is classified in windows; --timeline shows them)",
            timeline::WHOLE_MAX_S / 60.0
        )?;
    }
    if failures > 0 {
        anyhow::bail!(
            "{failures} of {} files could not be analysed",
            args.files.len()
        );
    }
    Ok(())
}

/// How a file's overall answer was reached, with the timeline's segments when there is one.
enum How {
    /// The whole file in one model call (short files); the segments if `--timeline` asked.
    Whole(Option<Vec<Segment>>),
    /// The mean of the windows' answers (files over [`timeline::WHOLE_MAX_S`]).
    MeanOfWindows(Vec<Segment>),
}

/// Classifies `file`: its duration in seconds, the overall answer and how it was reached. The file
/// is read a block at a time; the first [`timeline::WHOLE_MAX_S`] of samples are kept, and a file
/// that turns out longer goes through the timeline's windows as it is read, so memory never grows
/// with the file.
fn analyse(
    predictor: &Predictor,
    plan: &mut FeaturePlan,
    file: &Path,
    with_timeline: bool,
) -> anyhow::Result<(f32, Prediction, How)> {
    let rate = SAMPLE_RATE;
    let config = TimelineConfig::default();
    let whole_max = (timeline::WHOLE_MAX_S as f64 * rate as f64) as usize;
    let mut stream = SampleStream::open(file)?;
    let mut head: Vec<f32> = Vec::new();
    if let Some(n) = stream.expected_samples() {
        head.reserve(n.min(whole_max as u64) as usize);
    }
    let mut block = Vec::new();
    let mut more = true;
    while more {
        more = stream.next_block(&mut block)?;
        if head.len() + block.len() > whole_max {
            break;
        }
        head.extend_from_slice(&block);
        block.clear();
    }
    if head.len() + block.len() <= whole_max {
        // The whole file is in `head`.
        let features = plan.compute(&head)?;
        let p = predictor.predict(&features)?;
        let segments = if with_timeline {
            Some(timeline::timeline(predictor, plan, &head, &config)?)
        } else {
            None
        };
        return Ok((features.duration_s, p, How::Whole(segments)));
    }
    // A long file: windows as it is read, a batch at a time.
    let expected = stream.expected_samples();
    let progress = std::io::stderr().is_terminal();
    let name = file.display().to_string();
    let mut windows = WindowBatches::new(rate, &config);
    let mut last_shown = 0usize;
    windows.push(predictor, plan, &head)?;
    drop(head);
    loop {
        windows.push(predictor, plan, &block)?;
        windows.classify(predictor)?;
        if progress && windows.segments().len() >= last_shown + 16 {
            last_shown = windows.segments().len();
            let done = windows.samples_seen() as f64 / rate as f64;
            match expected {
                Some(n) => eprint!("\r{name}: {:.0} of {:.0} s", done, n as f64 / rate as f64),
                None => eprint!("\r{name}: {done:.0} s"),
            }
        }
        if !more {
            break;
        }
        more = stream.next_block(&mut block)?;
    }
    if progress && last_shown > 0 {
        eprint!("\r\x1b[K");
    }
    let duration = windows.samples_seen() as f32 / rate as f32;
    windows.end(predictor, plan)?;
    windows.classify(predictor)?;
    let segments = windows.finish();
    let p = timeline::mean_of_windows(predictor, &segments)?;
    Ok((duration, p, How::MeanOfWindows(segments)))
}

/// A prediction as JSON: probabilities by class, label, uncertainty, branches, logits.
fn prediction_json(classes: &[String], p: &Prediction) -> serde_json::Value {
    let probs: serde_json::Map<String, serde_json::Value> = classes
        .iter()
        .zip(&p.probabilities)
        .map(|(c, v)| (c.clone(), serde_json::json!(v)))
        .collect();
    let branches: serde_json::Map<String, serde_json::Value> = p
        .branches
        .iter()
        .map(|(b, v)| (b.name().to_string(), serde_json::json!(v)))
        .collect();
    serde_json::json!({
        "probabilities": probs,
        "label": p.label,
        "uncertain": p.uncertain,
        "speech_to_noise_db": p.speech_to_noise_db,
        "noisy": p.noisy,
        "branches": branches,
        "logits": p.logits,
    })
}

/// One row of the table.
fn write_row(
    out: &mut impl Write,
    name: &str,
    duration: f32,
    p: &Prediction,
    mark: &str,
) -> std::io::Result<()> {
    write!(out, "{name:<40} {duration:>8.2}")?;
    for v in &p.probabilities {
        write!(out, " {:>7.1}%", v * 100.0)?;
    }
    writeln!(
        out,
        "  {}{}{}{mark}",
        p.label,
        if p.uncertain { " (uncertain)" } else { "" },
        if p.noisy { " (noisy)" } else { "" }
    )
}
