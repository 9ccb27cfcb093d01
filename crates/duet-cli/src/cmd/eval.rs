//! `duet eval --model M --corpus iemocap:DIR|manifest:FILE`: a trained model's WA / UA / macro-F1
//! and confusion matrix on a corpus, with the metrics `train` reports.

use std::path::PathBuf;

use anyhow::{Context, bail};
use duet_data::{OnBadAudio, metrics, open_corpus};
use duet_model::Predictor;
use duet_model::input::Prepared;
use duet_train::cache::FeatureCache;

use crate::cmd::Backend;

/// Arguments of `duet eval`.
#[derive(clap::Args)]
pub struct Args {
    /// The weights file; the bundled model when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// `iemocap:DIR` or `manifest:FILE`; repeat to evaluate on several corpora (one result each).
    #[arg(long, required = true)]
    pub corpus: Vec<String>,
    /// Merge or rename manifest labels, e.g. `exc=happy,fru=`.
    #[arg(long)]
    pub label_map: Option<String>,
    /// Only these sessions (comma-separated), e.g. the test session of a fold.
    #[arg(long, value_delimiter = ',')]
    pub sessions: Vec<String>,
    /// `fail` (default) or `skip` undecodable audio.
    #[arg(long, default_value = "fail", value_parser = crate::cmd::parse_bad_audio)]
    pub on_bad_audio: OnBadAudio,
    /// Print the metrics as JSON.
    #[arg(long)]
    pub json: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (predictor, name) = crate::cmd::load_predictor(args.model.as_deref(), args.backend)?;
    for spec in &args.corpus {
        eval_one(&args, &predictor, &name, spec).with_context(|| format!("corpus {spec}"))?;
    }
    Ok(())
}

fn eval_one(
    args: &Args,
    predictor: &Predictor,
    model_name: &str,
    spec: &str,
) -> anyhow::Result<()> {
    let mut corpus = open_corpus(spec, args.label_map.as_deref())?;
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
    let policy = args.on_bad_audio;
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
    let mut probs = Vec::with_capacity(prepared.len());
    let mut uncertain = 0;
    let mut noisy = 0;
    for chunk in prepared.chunks(32) {
        let refs: Vec<&Prepared> = chunk.iter().collect();
        for p in predictor.predict_prepared(&refs)? {
            pred.push(classes.iter().position(|c| *c == p.label).unwrap_or(0));
            uncertain += usize::from(p.uncertain);
            noisy += usize::from(p.noisy);
            probs.push(p.probabilities);
        }
    }
    let m = metrics::compute(&truth, &pred, classes.len());
    // Of the probabilities people are shown (with the model's temperature).
    let ece = metrics::ece(&probs, &truth, 10);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"model": model_name, "corpus": spec, "classes": classes, "metrics": m, "ece": ece, "uncertain": uncertain, "noisy": noisy, "skipped": cache.bad_audio.skipped.len()})
        );
    } else {
        println!(
            "{spec}: {} utterances: WA {:.1} %, UA {:.1} %, macro-F1 {:.1} %, ECE {:.3}, {} uncertain, {} noisy{}",
            m.n,
            100.0 * m.wa,
            100.0 * m.ua,
            100.0 * m.macro_f1,
            ece,
            uncertain,
            noisy,
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
