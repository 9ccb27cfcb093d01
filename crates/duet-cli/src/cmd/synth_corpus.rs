//! `duet synth-corpus --out DIR [--voices N] [--sentences N] [--seed S] [--voices-per-session N]`:
//! renders the synthetic acted-prosody corpus (angry / happy / neutral / sad by prosody) with
//! espeak-ng, flite and sox, and writes `DIR/manifest.csv` for `train --corpus manifest:DIR/manifest.csv`.
//! The design (voices, sessions, class prosody, noise) is documented in `duet_data::synth`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use duet_data::synth::{SynthOptions, synth_corpus};

/// Arguments of `duet synth-corpus`.
#[derive(clap::Args)]
pub struct Args {
    /// Output directory (created if missing): wav/SESSION/SPEAKER/*.wav, manifest.csv, synth.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Voices (= speakers), each with its own base voice; at most 56.
    #[arg(long, default_value_t = 10)]
    pub voices: usize,
    /// Sentences per voice; each is spoken in all four classes (voices x sentences x 4 utterances).
    #[arg(long, default_value_t = 20)]
    pub sentences: usize,
    /// Seed of every random choice (same seed, same files).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Voices per session (sessions are speaker-disjoint: the folds of `--protocol loso`).
    #[arg(long, default_value_t = 2)]
    pub voices_per_session: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Where to look for espeak-ng, flite and sox (PATH syntax); default: $PATH.
    #[arg(long)]
    pub tool_path: Option<OsString>,
}

/// Runs `duet synth-corpus`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = SynthOptions {
        voices: args.voices,
        sentences: args.sentences,
        seed: args.seed,
        voices_per_session: args.voices_per_session,
        tool_path: args.tool_path,
        threads: args.threads,
    };
    let start = Instant::now();
    let last = Mutex::new(0usize);
    let manifest = synth_corpus(&args.out, &opts, |done, total| {
        let step = (total / 10).max(1);
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if done == total || done >= *last + step {
            *last = done;
            eprintln!(
                "synth-corpus: {done}/{total} utterances ({:.1} s)",
                start.elapsed().as_secs_f64()
            );
        }
    })
    .with_context(|| format!("rendering the synthetic corpus into {}", args.out.display()))?;
    let corpus = duet_data::manifest::read(&manifest, None)
        .with_context(|| format!("reading back {}", manifest.display()))?;
    eprintln!(
        "synth-corpus: {} utterances, {} speakers in {} sessions, {:.1} s\n{}",
        corpus.utterances.len(),
        corpus.speakers().len(),
        corpus.sessions().len(),
        start.elapsed().as_secs_f64(),
        corpus.statistics_table()
    );
    println!("{}", manifest.display());
    Ok(())
}
