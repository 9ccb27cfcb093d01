//! `duet eval --model M --corpus iemocap:DIR|manifest:FILE`: a trained model's WA / UA / macro-F1
//! and confusion matrix on a corpus, with the metrics `train` reports.

use std::path::PathBuf;

use anyhow::{Context, bail};
use duet_data::cache::FeatureCache;
use duet_data::{OnBadAudio, metrics, open_corpus};
use duet_model::Predictor;
use duet_model::input::Prepared;

use crate::cmd::Backend;

/// Arguments of `duet eval`.
#[derive(clap::Args)]
pub struct Args {
    /// The weights file.
    #[arg(long)]
    pub model: PathBuf,
    /// `iemocap:DIR` or `manifest:FILE`.
    #[arg(long)]
    pub corpus: String,
    /// Merge or rename manifest labels, e.g. `exc=happy,fru=`.
    #[arg(long)]
    pub label_map: Option<String>,
    /// Only these sessions (comma-separated), e.g. the test session of a fold.
    #[arg(long, value_delimiter = ',')]
    pub sessions: Vec<String>,
    /// `fail` (default) or `skip` undecodable audio.
    #[arg(long, default_value = "fail")]
    pub on_bad_audio: String,
    /// Print the metrics as JSON.
    #[arg(long)]
    pub json: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.model)
        .with_context(|| format!("cannot read {}", args.model.display()))?;
    let (device, _) = args.backend.device();
    let predictor = Predictor::from_bytes(&bytes, &device)
        .with_context(|| format!("{}", args.model.display()))?;
    let mut corpus = open_corpus(&args.corpus, args.label_map.as_deref())?;
    if !args.sessions.is_empty() {
        let drop: Vec<usize> = corpus
            .utterances
            .iter()
            .enumerate()
            .filter(|(_, u)| !args.sessions.contains(&u.session))
            .map(|(i, _)| i)
            .collect();
        corpus = corpus.without(&drop);
        if corpus.utterances.is_empty() {
            bail!("no utterance in sessions {}", args.sessions.join(","));
        }
    }
    // The model's classes must be the corpus's, in the same order.
    let classes = &predictor.config().classes;
    let map: Vec<usize> = corpus
        .classes
        .iter()
        .map(|c| {
            classes.iter().position(|m| m == c).with_context(|| {
                format!(
                    "the corpus has class `{c}` but the model knows only {}",
                    classes.join(", ")
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let policy: OnBadAudio = args.on_bad_audio.parse()?;
    let cache = FeatureCache::compute(&corpus, &predictor.config().features, policy, &|_, _| {})?;
    let mut truth = Vec::new();
    let mut prepared: Vec<Prepared> = Vec::new();
    for (u, f) in corpus.utterances.iter().zip(&cache.features) {
        if let Some(f) = f {
            prepared.push(
                predictor
                    .prepare(f)
                    .with_context(|| format!("{}", u.path.display()))?,
            );
            truth.push(map[u.label]);
        }
    }
    let mut pred = Vec::with_capacity(prepared.len());
    for chunk in prepared.chunks(32) {
        let refs: Vec<&Prepared> = chunk.iter().collect();
        for p in predictor.predict_prepared(&refs)? {
            pred.push(classes.iter().position(|c| *c == p.label).unwrap_or(0));
        }
    }
    let m = metrics::compute(&truth, &pred, classes.len());
    if args.json {
        println!(
            "{}",
            serde_json::json!({"model": args.model, "corpus": args.corpus, "classes": classes, "metrics": m, "skipped": cache.bad_audio.skipped.len()})
        );
    } else {
        println!(
            "{} utterances: WA {:.1} %, UA {:.1} %, macro-F1 {:.1} %{}",
            m.n,
            100.0 * m.wa,
            100.0 * m.ua,
            100.0 * m.macro_f1,
            if cache.bad_audio.skipped.is_empty() {
                String::new()
            } else {
                format!(" ({} skipped)", cache.bad_audio.skipped.len())
            }
        );
        print!("{:>12}", "true \\ pred");
        for c in classes {
            print!(" {c:>8}");
        }
        println!();
        for (c, row) in classes.iter().zip(&m.confusion) {
            print!("{c:>12}");
            for v in row {
                print!(" {v:>8}");
            }
            println!();
        }
    }
    Ok(())
}
