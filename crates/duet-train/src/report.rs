#![allow(missing_docs)] // Report fields are described in the module doc and report.md itself.
//! The run report: `report.json` (everything, machine-readable), `report.md` (for people) with a
//! confusion-matrix image and loss / accuracy curves (SVG, drawn with plotters).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde_json::json;

use crate::train::{RunResult, TrainOptions};
use duet_data::DataError;
use duet_data::corpus::Corpus;

/// Paper Table 1 (mean WA / UA over 5 folds), for context in the report.
const PAPER_TABLE1: &[(&str, f64, f64)] = &[
    ("base1", 64.7, 65.5),
    ("base2", 63.5, 64.5),
    ("base3", 62.9, 64.3),
    ("base4", 64.4, 65.2),
    ("base5", 68.3, 69.3),
    ("base6", 68.5, 68.9),
    ("ds-lstm", 69.4, 69.5),
    ("dual", 72.7, 73.3),
];

/// Extra facts about the run for the report.
pub struct RunInfo<'a> {
    pub git_revision: Option<String>,
    pub command: String,
    pub started: String,
    pub corpus: &'a Corpus,
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}", 100.0 * v)
    } else {
        "—".into()
    }
}

/// Writes report.json, report.md, confusion.svg and curves.svg into `dir`.
pub fn write(
    dir: &Path,
    options: &TrainOptions,
    result: &RunResult,
    info: &RunInfo<'_>,
) -> Result<(), DataError> {
    let corpus = info.corpus;
    let optimistic = options.select_on_test;
    let report = json!({
        "duet_version": env!("CARGO_PKG_VERSION"),
        "command": info.command,
        "started": info.started,
        "git_revision": info.git_revision,
        "options": options,
        "corpus": {
            "name": corpus.name,
            "source": corpus.source,
            "classes": corpus.classes,
            "utterances": corpus.utterances.len(),
            "statistics": corpus.statistics(),
            "corpora": corpus.corpora().iter().map(|(name, counts)| json!({
                "name": name,
                "utterances": counts.iter().sum::<usize>(),
                "per_class": corpus.classes.iter().zip(counts).map(|(c, n)| (c.clone(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            })).collect::<Vec<_>>(),
        },
        "protocol": options.protocol.to_string(),
        "epoch_selection": if optimistic {
            "test fold (optimistic: the test data chose the epoch)".to_string()
        } else if options.average_last > 0 {
            format!("none: the mean of the weights of the last {} epochs", options.average_last)
        } else {
            "validation split from the training sessions".to_string()
        },
        "optimistic": optimistic,
        "folds": result.folds,
        "summary": result.summary,
        "final_model": {
            "path": result.model_path,
            "epochs": result.final_epochs,
            "resize": result.final_resize,
        },
        "bad_audio": result.bad_audio,
        "durations_s": {
            "total": result.seconds,
            "features": result.feature_seconds,
            "features_from_cache": result.features_cached,
            "folds": result.folds.iter().map(|f| (f.name.clone(), f.seconds)).collect::<std::collections::BTreeMap<_, _>>(),
        },
        "seed": options.seed,
        "device": result.device,
    });
    let path = dir.join("report.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| DataError::io(&path, e))?;

    confusion_svg(
        &dir.join("confusion.svg"),
        &corpus.classes,
        &result.summary.pooled.confusion,
    )?;
    curves_svg(&dir.join("curves.svg"), result)?;

    let s = &result.summary;
    let mut md = String::new();
    let _ = writeln!(md, "# Duet training report\n");
    let _ = writeln!(md, "`{}`\n", info.command);
    let _ = writeln!(
        md,
        "Model **{}** ({}), preset `{}`{}, corpus **{}** ({} utterances, {} speakers, {} sessions), protocol **{}**, {} epochs per fold, batch {}, Adam lr {}, seed {}, on {}. Started {}{}.\n",
        options.kind,
        options.kind.description(),
        options.preset.name(),
        options
            .level
            .map(|l| format!(", level normalised to {} dBFS", l.target_dbfs))
            .unwrap_or_default(),
        corpus.name,
        corpus.utterances.len(),
        corpus.speakers().len(),
        corpus.sessions().len(),
        options.protocol,
        options.epochs,
        options.batch,
        options.lr,
        options.seed,
        result.device,
        info.started,
        info.git_revision
            .as_deref()
            .map(|r| format!(", revision `{r}`"))
            .unwrap_or_default()
    );
    if optimistic {
        let _ = writeln!(
            md,
            "> **Optimistic numbers.** `--select-on-test` picked each fold's epoch on its TEST data, as the \
             authors' code did. These figures overstate what the model does on unseen data.\n"
        );
    } else if options.average_last > 0 {
        let _ = writeln!(
            md,
            "Each fold's model is the mean of its weights after each of the last {} epochs (no epoch was \
             chosen); the validation split fitted only the temperature, and the test data influenced \
             nothing.\n",
            options.average_last
        );
    } else {
        let _ = writeln!(
            md,
            "Each fold's epoch was chosen on a validation split taken from its training sessions; the test \
             data influenced nothing.\n"
        );
    }
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "| fold | train / valid / test | {} | WA % | UA % | macro-F1 % |",
        if options.average_last > 0 {
            "epochs averaged"
        } else {
            "selected epoch"
        }
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for f in &result.folds {
        // With averaging the fold's model is no single epoch: name the range its mean covers.
        let epoch = if options.average_last > 0 {
            format!(
                "{}-{}",
                f.best_epoch + 1 - options.average_last.min(f.best_epoch),
                f.best_epoch
            )
        } else {
            f.best_epoch.to_string()
        };
        let _ = writeln!(
            md,
            "| {} | {} / {} / {} | {} | {} | {} | {} |",
            f.name,
            f.train,
            f.valid,
            f.test,
            epoch,
            pct(f.metrics.wa),
            pct(f.metrics.ua),
            pct(f.metrics.macro_f1)
        );
    }
    let _ = writeln!(
        md,
        "| **mean ± std** | | | **{} ± {}** | **{} ± {}** | {} ± {} |\n",
        pct(s.wa.mean),
        pct(s.wa.std),
        pct(s.ua.mean),
        pct(s.ua.std),
        pct(s.macro_f1.mean),
        pct(s.macro_f1.std)
    );
    if let Some((_, wa, ua)) = PAPER_TABLE1
        .iter()
        .find(|(k, _, _)| *k == options.kind.name())
    {
        let _ = writeln!(
            md,
            "For context, the paper's Table 1 reports {wa} WA / {ua} UA for this model on IEMOCAP with its \
             \"standard 5-fold cross-validation\" (the authors' code: random, speaker-dependent folds with the \
             epoch picked on the test fold). Under speaker-independent leave-one-session-out, published \
             audio-only systems of this size score about 54-60 UA.\n"
        );
    }
    let _ = writeln!(md, "Folds (who was tested, who chose the epoch):\n");
    for f in &result.folds {
        let _ = writeln!(md, "- **{}**: {}", f.name, f.description);
    }
    let cal: Vec<_> = result
        .folds
        .iter()
        .filter_map(|f| f.calibration.as_ref().map(|c| (&f.name, c)))
        .collect();
    if !cal.is_empty() {
        let _ = writeln!(
            md,
            "\n## Calibration\n\nTemperature scaling fitted on each fold's validation part; expected \
             calibration error (10 bins) of its test part before and after:\n\n| fold | temperature | ECE before | ECE after |\n|---|---|---|---|"
        );
        for (name, c) in &cal {
            let _ = writeln!(
                md,
                "| {name} | {:.2} | {:.3} | {:.3} |",
                c.temperature, c.ece_before, c.ece_after
            );
        }
        if let Some(sum) = crate::train::calibration_summary(&result.folds) {
            let _ = writeln!(
                md,
                "| **mean** | | **{:.3}** | **{:.3}** |\n",
                sum.ece_before_mean, sum.ece_after_mean
            );
        }
    }
    let _ = writeln!(md, "Per-class F1 (mean ± std over folds):\n");
    let _ = writeln!(md, "| class | F1 % |\n|---|---|");
    for (c, m) in corpus.classes.iter().zip(&s.per_class_f1) {
        let _ = writeln!(md, "| {c} | {} ± {} |", pct(m.mean), pct(m.std));
    }
    let _ = writeln!(
        md,
        "\n## Confusion matrix (all test folds pooled)\n\n![confusion matrix](confusion.svg)\n"
    );
    let _ = write!(md, "| true \\ predicted |");
    for c in &corpus.classes {
        let _ = write!(md, " {c} |");
    }
    let _ = writeln!(md, "\n|---|{}", "---|".repeat(corpus.classes.len()));
    for (c, row) in corpus.classes.iter().zip(&s.pooled.confusion) {
        let _ = write!(md, "| {c} |");
        for v in row {
            let _ = write!(md, " {v} |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "\n## Training curves\n\n![loss and accuracy per epoch](curves.svg)\n"
    );
    let _ = writeln!(
        md,
        "## Corpus\n\n```\n{}\n```\n",
        corpus.statistics_table().trim_end()
    );
    let warnings: Vec<&String> = result.folds.iter().flat_map(|f| &f.warnings).collect();
    if !warnings.is_empty() || !result.bad_audio.skipped.is_empty() {
        let _ = writeln!(md, "## Warnings\n");
        for w in warnings {
            let _ = writeln!(md, "- {w}");
        }
        for sk in &result.bad_audio.skipped {
            let _ = writeln!(
                md,
                "- skipped `{}` ({}): {}",
                sk.id,
                sk.path.display(),
                sk.reason
            );
        }
        let _ = writeln!(md);
    }
    if let (Some(e), Some(r)) = (result.final_epochs, result.final_resize) {
        let how = if options.average_last > 0 {
            format!(
                "the folds' schedule; the mean of the weights of its last {} epochs",
                options.average_last
            )
        } else {
            "the median selected epoch".to_string()
        };
        let _ = writeln!(
            md,
            "## Exported model\n\n`model.safetensors`: trained on all {} utterances for {e} epochs ({how}), \
             spectrograms resized to {} / {} frames (the corpus medians). Its metadata carries the \
             cross-validation figures above.\n",
            corpus.utterances.len(),
            r.narrow_frames,
            r.wide_frames
        );
    }
    let _ = writeln!(
        md,
        "Durations: features {:.1} s{}, total {:.1} s.",
        result.feature_seconds,
        if result.features_cached {
            " (from cache)"
        } else {
            ""
        },
        result.seconds
    );
    let path = dir.join("report.md");
    std::fs::write(&path, md).map_err(|e| DataError::io(&path, e))
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Training(format!("drawing {}: {e}", path.display()))
}

fn confusion_svg(path: &Path, classes: &[String], m: &[Vec<usize>]) -> Result<(), DataError> {
    let k = classes.len();
    let root = SVGBackend::new(path, (520, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Confusion matrix (rows: true, columns: predicted)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0..k, 0..k)
        .map_err(|e| plot_err(path, e))?;
    let names = classes.to_vec();
    let names2 = classes.to_vec();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(k)
        .y_labels(k)
        .x_label_formatter(&move |i| names.get(*i).cloned().unwrap_or_default())
        .y_label_formatter(&move |i| {
            names2
                .get(k.saturating_sub(1 + *i))
                .cloned()
                .unwrap_or_default()
        })
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (t, row) in m.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        for (p, &v) in row.iter().enumerate() {
            let frac = v as f64 / total as f64;
            let shade = (255.0 * (1.0 - 0.85 * frac)) as u8;
            let y = k - 1 - t;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(p, y), (p + 1, y + 1)],
                    RGBColor(shade, shade, 255).filled(),
                )))
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{v} ({:.0}%)", 100.0 * frac),
                    (p, y),
                    ("sans-serif", 14).into_font(),
                )))
                .map_err(|e| plot_err(path, e))?;
        }
    }
    root.present().map_err(|e| plot_err(path, e))
}

fn curves_svg(path: &Path, result: &RunResult) -> Result<(), DataError> {
    let root = SVGBackend::new(path, (900, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (left, right) = root.split_horizontally(450);
    let max_epoch = result
        .folds
        .iter()
        .map(|f| f.history.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let max_loss = result
        .folds
        .iter()
        .flat_map(|f| f.history.iter().map(|r| r.train_loss))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let mut loss = ChartBuilder::on(&left)
        .caption("training loss", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(1..max_epoch, 0.0..max_loss * 1.05)
        .map_err(|e| plot_err(path, e))?;
    loss.configure_mesh()
        .x_desc("epoch")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let mut acc = ChartBuilder::on(&right)
        .caption("UA % (solid: validation, dashed: test)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(1..max_epoch, 0.0..100.0)
        .map_err(|e| plot_err(path, e))?;
    acc.configure_mesh()
        .x_desc("epoch")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (i, f) in result.folds.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        loss.draw_series(LineSeries::new(
            f.history.iter().map(|r| (r.epoch, r.train_loss)),
            color,
        ))
        .map_err(|e| plot_err(path, e))?
        .label(f.name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        acc.draw_series(LineSeries::new(
            f.history
                .iter()
                .filter(|r| r.valid_ua.is_finite())
                .map(|r| (r.epoch, 100.0 * r.valid_ua)),
            color,
        ))
        .map_err(|e| plot_err(path, e))?;
        acc.draw_series(DashedLineSeries::new(
            f.history
                .iter()
                .filter(|r| r.test_ua.is_finite())
                .map(|r| (r.epoch, 100.0 * r.test_ua)),
            4,
            3,
            color.into(),
        ))
        .map_err(|e| plot_err(path, e))?;
    }
    loss.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}
