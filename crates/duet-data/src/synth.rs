//! The synthetic acted-prosody corpus (`duet synth-corpus`): a corpus anyone can make in seconds, with
//! the four classes carried by prosody alone, for tests, demos and a training run without IEMOCAP.
//!
//! # Design
//!
//! - **Voices = speakers.** Each voice is one base voice used nowhere else in the corpus: an espeak-ng
//!   variant (`m3`, `f2`, `Annie`, ... on a cycling English accent: `en-us`, `en`, `en-gb-scotland`,
//!   `en-gb-x-rp`, `en-029`, `en-gb-x-gbclan`) or a flite voice (`slt`, `awb`, `rms`, `kal16`). On top,
//!   each voice draws from the seed its own baseline: pitch (±3 semitones), speaking rate (±12%),
//!   expressiveness (how far its emotions move from its neutral: x0.7 .. x1.2), recording level
//!   (-6 .. +4 dB), and background noise (white or pink, floor -68 .. -52 dBFS).
//! - **Sessions = voice groups**, [`SynthOptions::voices_per_session`] consecutive voices of
//!   [`voice_pool`] each (default 2: a male and a female voice while both last, like IEMOCAP's
//!   sessions). No base voice is in two sessions, so leave-one-session-out is speaker-independent.
//!   Sessions are named `Ses01`, `Ses02`, ...
//! - **Every voice speaks every sentence in every class** (same words in all four classes: the class
//!   is in the prosody only). `voices x sentences x 4` utterances.
//! - **Class prosody** relative to the voice's baseline ([`CLASS_PROFILES`], scaled by the voice's
//!   expressiveness, plus per-utterance jitter: pitch sd 1.2 st, range x e^(0.2 N), rate x e^(0.05 N),
//!   level sd 2.5 dB):
//!
//!   | class | pitch | pitch range | rate | level |
//!   |---|---|---|---|---|
//!   | angry | +2.5 st | x1.7 | x1.18 | +7 dB |
//!   | happy | +4 st | x2.0 | x1.07 | +2.5 dB |
//!   | neutral | 0 | x1 | x1 | 0 |
//!   | sad | -2.5 st | x0.45 | x0.80 | -7 dB |
//!
//!   Because the recording level varies by voice and by utterance, loudness alone does not give the
//!   class; pitch and rate are relative to a voice's own baseline, which varies too.
//! - **Rendering.** espeak-ng: `-v ACCENT+VARIANT -s WPM -m` with SSML
//!   `<prosody pitch="±x%" range="±y%">`. flite: `--setf duration_stretch` for rate,
//!   `--setf int_f0_target_mean` for pitch (`rms` ignores it: `sox pitch` instead); flite has no pitch
//!   range control, so ranges above 1 become `sox bend` excursions (up and back down, ±250..450 cents
//!   x (range - 1)), and `sad`'s narrow range is not rendered for flite voices. sox then converts to
//!   16 kHz mono 16-bit (`-D`, no dither: deterministic). Duet then sets the level (from the active
//!   speech RMS), pads 0.05-0.3 s of silence at each end, adds the voice's noise, limits peaks to
//!   -0.3 dBFS and writes 16 kHz mono 16-bit PCM WAV.
//! - **Deterministic**: every random number comes from the seed and the utterance's (voice, sentence,
//!   class), never from thread order; the tools are run without dither. Same seed, same bytes.
//! - **Output**: `OUT/wav/SESSION/SPEAKER/ID.wav`, `OUT/manifest.csv` (`id,path,label,speaker,session`,
//!   paths relative to OUT), `OUT/synth.json` (options, every voice's parameters, the class profiles,
//!   tool versions). Existing files of the same names are overwritten.
//! - **Tools**: espeak-ng, flite and sox are looked up on `PATH` (or [`SynthOptions::tool_path`]);
//!   nothing is installed. A missing one is [`DataError::MissingTool`] naming its apt package.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::corpus::{Corpus, FOUR_CLASSES, Utterance, ensure_writable_dir};
use crate::error::DataError;
use crate::manifest;
use duet_model::rng::SplitMix64;

/// Output sample rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// Options of [`synth_corpus`].
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// Voices (= speakers), at most [`voice_pool`]`().len()`.
    pub voices: usize,
    /// Sentences each voice speaks (in each class).
    pub sentences: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Voices per session (the last session may have fewer).
    pub voices_per_session: usize,
    /// Directories to find espeak-ng / flite / sox in, in `PATH` syntax; `None` = the `PATH` variable.
    pub tool_path: Option<OsString>,
    /// Worker threads; 0 = rayon's default (one per core).
    pub threads: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            voices: 10,
            sentences: 20,
            seed: 0,
            voices_per_session: 2,
            tool_path: None,
            threads: 0,
        }
    }
}

/// A synthesiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// espeak-ng (formant synthesis; variants change the timbre).
    Espeak,
    /// flite (CMU; diphone and clustergen voices).
    Flite,
}

/// A base voice: a timbre that belongs to one speaker only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BaseVoice {
    /// The synthesiser.
    pub engine: Engine,
    /// espeak-ng variant (`m3`) or flite voice (`slt`).
    pub name: &'static str,
    /// `F` or `M`.
    pub gender: char,
}

const fn es(name: &'static str, gender: char) -> BaseVoice {
    BaseVoice {
        engine: Engine::Espeak,
        name,
        gender,
    }
}
const fn fl(name: &'static str, gender: char) -> BaseVoice {
    BaseVoice {
        engine: Engine::Flite,
        name,
        gender,
    }
}

/// Base voices in the order voices are taken: male / female pairs first (flite ones early, so small
/// corpora use both synthesisers), then the remaining male espeak-ng variants.
const POOL: [BaseVoice; 56] = [
    es("m3", 'M'),
    fl("slt", 'F'),
    fl("awb", 'M'),
    es("f2", 'F'),
    fl("rms", 'M'),
    es("f4", 'F'),
    fl("kal16", 'M'),
    es("f1", 'F'),
    es("m1", 'M'),
    es("f3", 'F'),
    es("m2", 'M'),
    es("f5", 'F'),
    es("m4", 'M'),
    es("Annie", 'F'),
    es("m6", 'M'),
    es("Andrea", 'F'),
    es("m7", 'M'),
    es("belinda", 'F'),
    es("m8", 'M'),
    es("aunty", 'F'),
    es("Andy", 'M'),
    es("grandma", 'F'),
    es("Michael", 'M'),
    es("steph", 'F'),
    es("Mike", 'M'),
    es("shelby", 'F'),
    es("antonio", 'M'),
    es("Alicia", 'F'),
    es("ed", 'M'),
    es("anika", 'F'),
    es("m5", 'M'),
    es("Denis", 'M'),
    es("Diogo", 'M'),
    es("Henrique", 'M'),
    es("Hugo", 'M'),
    es("Marco", 'M'),
    es("gustave", 'M'),
    es("iven", 'M'),
    es("john", 'M'),
    es("michel", 'M'),
    es("miguel", 'M'),
    es("norbert", 'M'),
    es("pablo", 'M'),
    es("paul", 'M'),
    es("quincy", 'M'),
    es("rob", 'M'),
    es("robert", 'M'),
    es("sandro", 'M'),
    es("travis", 'M'),
    es("victor", 'M'),
    es("Gene", 'M'),
    es("Jacky", 'M'),
    es("max", 'M'),
    es("grandpa", 'M'),
    es("klatt", 'M'),
    es("edward", 'M'),
];

/// The base voices, in the order [`synth_corpus`] uses them.
pub fn voice_pool() -> &'static [BaseVoice] {
    &POOL
}

const ACCENTS: [&str; 6] = [
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-gb-x-gbclan",
];

/// A class's prosody relative to a voice's neutral baseline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ClassProfile {
    /// Class name.
    pub class: &'static str,
    /// Mean pitch shift in semitones.
    pub pitch_st: f64,
    /// Pitch-range factor (1 = the voice's own).
    pub range: f64,
    /// Speaking-rate factor.
    pub rate: f64,
    /// Level change in dB.
    pub level_db: f64,
}

/// The four classes' prosody ([`FOUR_CLASSES`] order).
pub const CLASS_PROFILES: [ClassProfile; 4] = [
    ClassProfile {
        class: "angry",
        pitch_st: 2.5,
        range: 1.7,
        rate: 1.18,
        level_db: 7.0,
    },
    ClassProfile {
        class: "happy",
        pitch_st: 4.0,
        range: 2.0,
        rate: 1.07,
        level_db: 2.5,
    },
    ClassProfile {
        class: "neutral",
        pitch_st: 0.0,
        range: 1.0,
        rate: 1.0,
        level_db: 0.0,
    },
    ClassProfile {
        class: "sad",
        pitch_st: -2.5,
        range: 0.45,
        rate: 0.80,
        level_db: -7.0,
    },
];

/// Active-speech RMS of a neutral utterance at a voice's level offset 0, in dBFS.
const BASE_LEVEL_DBFS: f64 = -27.0;
/// espeak-ng's speaking rate of a neutral utterance at rate factor 1, words per minute.
const BASE_WPM: f64 = 165.0;

const SENTENCES: [&str; 40] = [
    "The meeting was moved to the third floor this morning.",
    "I left the keys on the kitchen table.",
    "We will take the early train to the city tomorrow.",
    "The package arrived two days after the invoice.",
    "She said the report would be ready by Friday.",
    "There are seven chairs in the room next door.",
    "He parked the car behind the old library.",
    "The store closes at nine on weekdays.",
    "They painted the fence a light shade of green.",
    "My brother called me about the weekend plans.",
    "The bus stops at the corner of the main street.",
    "You can find the forms on the second shelf.",
    "It rained for most of the afternoon.",
    "The new phone came with a longer cable.",
    "We talked about the project over lunch.",
    "The window in the hallway does not close.",
    "Her flight lands a little after midnight.",
    "The dog has been sleeping by the door all day.",
    "I think the answer is written on the back.",
    "The teacher handed out the results today.",
    "Somebody moved the boxes into the garage.",
    "The river is higher than it was last year.",
    "He wants to know what time the show starts.",
    "The coffee machine on this floor is broken again.",
    "We should have a decision by the end of the month.",
    "The letter was sent to the wrong address.",
    "Our neighbours bought a house near the lake.",
    "The lights went out during the second half.",
    "I have not seen that film before.",
    "The price of the tickets went up this week.",
    "They found the missing file in the archive.",
    "The children are playing in the garden.",
    "She moved here from another town in the spring.",
    "The doctor will see you in ten minutes.",
    "The road to the village was closed for repairs.",
    "We ran out of paper for the printer.",
    "His sister works at the hospital downtown.",
    "The last train leaves at a quarter past eleven.",
    "I told them we would be there on Sunday.",
    "The results of the vote will be announced tonight.",
];

/// Sentence `i` of the corpus: the 40 written ones, then combinations of their parts.
pub fn sentence(i: usize) -> String {
    if i < SENTENCES.len() {
        return SENTENCES[i].to_string();
    }
    const SUBJECTS: [&str; 8] = [
        "The manager",
        "My neighbour",
        "The driver",
        "Our teacher",
        "The new student",
        "His cousin",
        "The old man",
        "Her friend",
    ];
    const VERBS: [&str; 8] = [
        "brought the papers",
        "opened the window",
        "called the office",
        "fixed the bicycle",
        "read the message",
        "carried the boxes",
        "cleaned the kitchen",
        "closed the gate",
    ];
    const TIMES: [&str; 8] = [
        "this morning",
        "after lunch",
        "on Tuesday",
        "last night",
        "before the meeting",
        "in the evening",
        "at noon",
        "yesterday",
    ];
    let j = i - SENTENCES.len();
    format!(
        "{} {} {}.",
        SUBJECTS[j % 8],
        VERBS[(j / 8) % 8],
        TIMES[(j / 64 + j) % 8]
    )
}

/// One voice (speaker) of a corpus with its drawn baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Voice {
    /// Speaker name, e.g. `v01-espeak-m3`.
    pub speaker: String,
    /// Session, e.g. `Ses01`.
    pub session: String,
    /// The base voice.
    pub base: BaseVoice,
    /// espeak-ng accent (empty for flite).
    pub accent: String,
    /// Baseline pitch shift in semitones.
    pub pitch_st: f64,
    /// Baseline rate factor.
    pub rate: f64,
    /// How far the emotions move (scales the class profile).
    pub expressiveness: f64,
    /// Recording level offset, dB.
    pub level_db: f64,
    /// Noise floor, dBFS RMS.
    pub noise_dbfs: f64,
    /// `white` or `pink`.
    pub noise: &'static str,
}

/// The voices of a corpus for `opts` (deterministic in the seed).
pub fn voices(opts: &SynthOptions) -> Result<Vec<Voice>, DataError> {
    if opts.voices == 0 || opts.sentences == 0 || opts.voices_per_session == 0 {
        return Err(DataError::Synth(
            "--voices, --sentences and --voices-per-session must be at least 1".into(),
        ));
    }
    if opts.voices > POOL.len() {
        return Err(DataError::Synth(format!(
            "{} voices asked for; there are {} distinct base voices (each speaker needs its own)",
            opts.voices,
            POOL.len()
        )));
    }
    Ok((0..opts.voices)
        .map(|v| {
            let base = POOL[v];
            let mut r = SplitMix64::derive(&[opts.seed, 1, v as u64]);
            let accent = match base.engine {
                Engine::Espeak => ACCENTS[v % ACCENTS.len()].to_string(),
                Engine::Flite => String::new(),
            };
            Voice {
                speaker: format!(
                    "v{:02}-{}-{}",
                    v + 1,
                    match base.engine {
                        Engine::Espeak => "espeak",
                        Engine::Flite => "flite",
                    },
                    base.name
                ),
                session: format!("Ses{:02}", v / opts.voices_per_session + 1),
                base,
                accent,
                pitch_st: (1.5 * r.normal()).clamp(-3.0, 3.0),
                rate: (1.0 + 0.06 * r.normal()).clamp(0.88, 1.12),
                expressiveness: r.range(0.7, 1.2),
                level_db: r.range(-6.0, 4.0),
                noise_dbfs: r.range(-68.0, -52.0),
                noise: if r.next_f64() < 0.5 { "white" } else { "pink" },
            }
        })
        .collect())
}

/// What one utterance is rendered with.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UtterancePlan {
    /// Utterance id.
    pub id: String,
    /// Voice index into [`voices`].
    pub voice: usize,
    /// Sentence index.
    pub sentence: usize,
    /// Class index ([`FOUR_CLASSES`]).
    pub class: usize,
    /// Total pitch shift (voice + class + jitter), semitones.
    pub pitch_st: f64,
    /// Pitch-range factor.
    pub range: f64,
    /// Total rate factor.
    pub rate: f64,
    /// Active-speech level, dBFS.
    pub level_dbfs: f64,
    /// Noise floor, dBFS.
    pub noise_dbfs: f64,
    /// Silence before / after, seconds.
    pub pad_s: (f64, f64),
    /// Seed of the noise and the bends.
    pub noise_seed: u64,
    /// Path relative to the output directory.
    pub rel_path: String,
}

/// Every utterance's rendering parameters (deterministic in the seed).
pub fn plan(opts: &SynthOptions) -> Result<(Vec<Voice>, Vec<UtterancePlan>), DataError> {
    let vs = voices(opts)?;
    let mut out = Vec::with_capacity(opts.voices * opts.sentences * 4);
    for (v, voice) in vs.iter().enumerate() {
        for s in 0..opts.sentences {
            for (c, prof) in CLASS_PROFILES.iter().enumerate() {
                let mut r = SplitMix64::derive(&[opts.seed, 2, v as u64, s as u64, c as u64]);
                let e = voice.expressiveness;
                let id = format!("{}_{}_s{:03}", voice.speaker, prof.class, s + 1);
                out.push(UtterancePlan {
                    rel_path: format!("wav/{}/{}/{}.wav", voice.session, voice.speaker, id),
                    id,
                    voice: v,
                    sentence: s,
                    class: c,
                    pitch_st: voice.pitch_st + e * prof.pitch_st + 1.2 * r.normal(),
                    range: (prof.range.powf(e) * (0.2 * r.normal()).exp()).clamp(0.2, 3.0),
                    rate: (voice.rate * prof.rate.powf(e) * (0.05 * r.normal()).exp())
                        .clamp(0.6, 1.6),
                    level_dbfs: BASE_LEVEL_DBFS
                        + voice.level_db
                        + e * prof.level_db
                        + 2.5 * r.normal(),
                    noise_dbfs: voice.noise_dbfs + r.range(-2.0, 2.0),
                    pad_s: (r.range(0.05, 0.3), r.range(0.05, 0.3)),
                    noise_seed: r.next_u64(),
                });
            }
        }
    }
    Ok((vs, out))
}

struct Tools {
    espeak: Option<PathBuf>,
    flite: Option<PathBuf>,
    sox: PathBuf,
}

/// Finds `tool` in `path` (PATH syntax) or the `PATH` variable.
pub fn find_tool(
    tool: &'static str,
    package: &'static str,
    path: Option<&OsStr>,
) -> Result<PathBuf, DataError> {
    let var = match path {
        Some(p) => p.to_os_string(),
        None => std::env::var_os("PATH").unwrap_or_default(),
    };
    let dirs: Vec<PathBuf> = std::env::split_paths(&var)
        .filter(|d| !d.as_os_str().is_empty())
        .collect();
    for d in &dirs {
        let c = d.join(tool);
        if is_executable(&c) {
            return Ok(c);
        }
    }
    Err(DataError::MissingTool {
        tool,
        package,
        searched: if dirs.is_empty() {
            "an empty PATH".into()
        } else {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        },
    })
}

fn is_executable(p: &Path) -> bool {
    match fs::metadata(p) {
        Ok(m) if m.is_file() => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o111 != 0
            }
            #[cfg(not(unix))]
            {
                true
            }
        }
        _ => false,
    }
}

/// Renders the corpus into `out` and returns the manifest's path. `progress(done, total)` is called
/// after each utterance, from worker threads.
pub fn synth_corpus(
    out: &Path,
    opts: &SynthOptions,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<PathBuf, DataError> {
    let (vs, plans) = plan(opts)?;
    let tp = opts.tool_path.as_deref();
    let needs = |e| vs.iter().any(|v| v.base.engine == e);
    let tools = Tools {
        espeak: if needs(Engine::Espeak) {
            Some(find_tool("espeak-ng", "espeak-ng", tp)?)
        } else {
            None
        },
        flite: if needs(Engine::Flite) {
            Some(find_tool("flite", "flite", tp)?)
        } else {
            None
        },
        sox: find_tool("sox", "sox", tp)?,
    };
    ensure_writable_dir(out)?;
    let tmp = out.join(format!(".synth-tmp-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;

    let done = AtomicUsize::new(0);
    let total = plans.len();
    let work = || -> Result<(), DataError> {
        plans.par_iter().try_for_each(|p| {
            render(out, &tmp, &tools, &vs[p.voice], p)?;
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            Ok(())
        })
    };
    let result = if opts.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .build()
            .map_err(|e| DataError::Synth(format!("cannot start worker threads: {e}")))?
            .install(work)
    } else {
        work()
    };
    let _ = fs::remove_dir_all(&tmp);
    result?;

    let corpus = Corpus {
        name: "synthetic".into(),
        source: format!("synthetic:{}", out.display()),
        classes: FOUR_CLASSES.iter().map(|c| c.to_string()).collect(),
        utterances: plans
            .iter()
            .map(|p| Utterance {
                corpus: String::new(),
                id: p.id.clone(),
                path: out.join(&p.rel_path),
                label: p.class,
                speaker: vs[p.voice].speaker.clone(),
                session: vs[p.voice].session.clone(),
            })
            .collect(),
    };
    let manifest_path = out.join("manifest.csv");
    manifest::write_csv(&manifest_path, &corpus)?;
    let info = json!({
        "generator": "duet synth-corpus",
        "options": {
            "voices": opts.voices,
            "sentences": opts.sentences,
            "seed": opts.seed,
            "voices_per_session": opts.voices_per_session,
        },
        "sample_rate": SAMPLE_RATE,
        "classes": FOUR_CLASSES,
        "class_profiles": CLASS_PROFILES,
        "voices": vs,
        "sentences": (0..opts.sentences).map(sentence).collect::<Vec<_>>(),
        "tools": {
            "espeak-ng": tools.espeak.as_deref().map(|t| tool_version(t, "--version")),
            "flite": tools.flite.as_deref().map(|t| tool_version(t, "--version")),
            "sox": tool_version(&tools.sox, "--version"),
        },
        "statistics": corpus.statistics(),
    });
    let info_path = out.join("synth.json");
    fs::write(
        &info_path,
        serde_json::to_string_pretty(&info).unwrap_or_default() + "\n",
    )
    .map_err(|e| DataError::io(&info_path, e))?;
    Ok(manifest_path)
}

fn tool_version(tool: &Path, flag: &str) -> String {
    Command::new(tool)
        .arg(flag)
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            s.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn run_tool(tool: &Path, args: &[OsString], what: &str) -> Result<(), DataError> {
    let output = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| DataError::io(tool, e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(DataError::Tool {
        tool: tool.display().to_string(),
        what: what.to_string(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        command: format!(
            "{} {}",
            tool.display(),
            args.iter()
                .map(|a| format!("{:?}", a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    })
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Native mean F0 (Hz) of the flite voices that honour `int_f0_target_mean`.
fn flite_f0(name: &str) -> Option<f64> {
    match name {
        "slt" => Some(160.0),
        "awb" => Some(125.0),
        "kal16" | "kal" => Some(95.0),
        _ => None,
    }
}

fn render(
    out: &Path,
    tmp: &Path,
    tools: &Tools,
    voice: &Voice,
    p: &UtterancePlan,
) -> Result<(), DataError> {
    let raw = tmp.join(format!("{}.raw.wav", p.id));
    let conv = tmp.join(format!("{}.16k.wav", p.id));
    let text = sentence(p.sentence);
    let mut sox_effects: Vec<String> = Vec::new();
    match voice.base.engine {
        Engine::Espeak => {
            let pitch_pct = (2f64.powf(p.pitch_st / 12.0) - 1.0) * 100.0;
            let range_pct = (p.range - 1.0) * 100.0;
            let ssml = format!(
                "<speak><prosody pitch=\"{pitch_pct:+.0}%\" range=\"{range_pct:+.0}%\">{}</prosody></speak>",
                xml_escape(&text)
            );
            let wpm = (BASE_WPM * p.rate).round().clamp(80.0, 450.0) as i64;
            let args: Vec<OsString> = vec![
                "-m".into(),
                "-v".into(),
                format!("{}+{}", voice.accent, voice.base.name).into(),
                "-s".into(),
                wpm.to_string().into(),
                "-w".into(),
                raw.clone().into(),
                ssml.into(),
            ];
            run_tool(
                tools.espeak.as_deref().expect("espeak-ng looked up"),
                &args,
                &p.id,
            )?;
        }
        Engine::Flite => {
            let mut args: Vec<OsString> = vec![
                "-voice".into(),
                voice.base.name.into(),
                "--setf".into(),
                format!("duration_stretch={:.4}", 1.0 / p.rate).into(),
            ];
            match flite_f0(voice.base.name) {
                Some(f0) => {
                    args.push("--setf".into());
                    args.push(
                        format!(
                            "int_f0_target_mean={:.2}",
                            f0 * 2f64.powf(p.pitch_st / 12.0)
                        )
                        .into(),
                    );
                }
                None => {
                    sox_effects.push("pitch".into());
                    sox_effects.push(format!("{:.0}", 100.0 * p.pitch_st));
                }
            }
            args.extend([
                "-t".into(),
                text.clone().into(),
                "-o".into(),
                raw.clone().into(),
            ]);
            run_tool(
                tools.flite.as_deref().expect("flite looked up"),
                &args,
                &p.id,
            )?;
            if p.range > 1.05 {
                let dur = wav_duration(&raw).unwrap_or(2.0);
                let mut r = SplitMix64::derive(&[p.noise_seed, 7]);
                let mut bends = Vec::new();
                // sox bend triples: delay after the previous bend's end, cents, duration.
                let mut end = 0.0;
                loop {
                    let delay = if bends.is_empty() {
                        r.range(0.1, 0.3)
                    } else {
                        r.range(0.05, 0.25)
                    };
                    let up = r.range(0.12, 0.25);
                    let down = r.range(0.12, 0.25);
                    if end + delay + up + down > dur - 0.05 {
                        break;
                    }
                    let cents = (p.range - 1.0)
                        * r.range(250.0, 450.0)
                        * if r.next_f64() < 0.5 { -1.0 } else { 1.0 };
                    bends.push(format!("{delay:.3},{cents:.0},{up:.3}"));
                    bends.push(format!("0,{:.0},{down:.3}", -cents));
                    end += delay + up + down;
                }
                if !bends.is_empty() {
                    sox_effects.push("bend".into());
                    sox_effects.extend(bends);
                }
            }
        }
    }
    let mut args: Vec<OsString> = vec![
        "-D".into(),
        "-R".into(),
        "-q".into(),
        raw.clone().into(),
        "-r".into(),
        SAMPLE_RATE.to_string().into(),
        "-c".into(),
        "1".into(),
        "-b".into(),
        "16".into(),
        "-e".into(),
        "signed-integer".into(),
        conv.clone().into(),
    ];
    args.extend(sox_effects.into_iter().map(OsString::from));
    args.extend(["rate".into(), "-v".into(), SAMPLE_RATE.to_string().into()]);
    run_tool(&tools.sox, &args, &p.id)?;
    let _ = fs::remove_file(&raw);

    let bytes = fs::read(&conv).map_err(|e| DataError::io(&conv, e))?;
    let _ = fs::remove_file(&conv);
    let audio = duet_dsp::decode_wav(&bytes).map_err(|e| {
        DataError::Synth(format!("{}: sox wrote audio Duet cannot read: {e}", p.id))
    })?;
    if audio.sample_rate != SAMPLE_RATE {
        return Err(DataError::Synth(format!(
            "{}: sox wrote {} Hz, expected {SAMPLE_RATE}",
            p.id, audio.sample_rate
        )));
    }
    let samples = post_process(&audio.samples, p, voice.noise);
    let dest = out.join(&p.rel_path);
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    fs::write(&dest, wav_bytes(&samples)).map_err(|e| DataError::io(&dest, e))
}

fn wav_duration(path: &Path) -> Option<f64> {
    let f = fs::File::open(path).ok()?;
    let r = duet_dsp::WavReader::new(std::io::BufReader::new(f)).ok()?;
    let fmt = r.format();
    Some(fmt.n_frames()? as f64 / fmt.sample_rate as f64)
}

/// Level, padding, noise, peak limit. Deterministic: the noise comes from the plan's seed.
fn post_process(speech: &[f32], p: &UtterancePlan, noise_kind: &str) -> Vec<f32> {
    let sr = SAMPLE_RATE as f64;
    // Active-speech RMS: 20 ms frames within 35 dB of the loudest.
    let frame = (0.02 * sr) as usize;
    let energies: Vec<f64> = speech
        .chunks(frame)
        .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / c.len() as f64)
        .collect();
    let max_e = energies.iter().cloned().fold(0.0, f64::max);
    let active: Vec<f64> = energies
        .iter()
        .cloned()
        .filter(|&e| e > max_e * 10f64.powf(-3.5))
        .collect();
    let rms = if active.is_empty() || max_e <= 0.0 {
        1.0
    } else {
        (active.iter().sum::<f64>() / active.len() as f64).sqrt()
    };
    let gain = 10f64.powf(p.level_dbfs / 20.0) / rms;
    let pre = (p.pad_s.0 * sr) as usize;
    let post = (p.pad_s.1 * sr) as usize;
    let n = pre + speech.len() + post;
    let mut out = vec![0f64; n];
    for (i, &x) in speech.iter().enumerate() {
        out[pre + i] = x as f64 * gain;
    }
    // Noise with unit RMS, then scaled to the floor.
    let mut r = SplitMix64::derive(&[p.noise_seed, 3]);
    let mut noise: Vec<f64> = (0..n).map(|_| r.normal()).collect();
    if noise_kind == "pink" {
        // Paul Kellet's economy pink filter.
        let (mut b0, mut b1, mut b2) = (0.0, 0.0, 0.0);
        for w in noise.iter_mut() {
            b0 = 0.99765 * b0 + *w * 0.0990460;
            b1 = 0.96300 * b1 + *w * 0.2965164;
            b2 = 0.57000 * b2 + *w * 1.0526913;
            *w = b0 + b1 + b2 + *w * 0.1848;
        }
        let nrms = (noise.iter().map(|x| x * x).sum::<f64>() / n.max(1) as f64).sqrt();
        if nrms > 0.0 {
            noise.iter_mut().for_each(|x| *x /= nrms);
        }
    }
    let floor = 10f64.powf(p.noise_dbfs / 20.0);
    for (o, w) in out.iter_mut().zip(&noise) {
        *o += floor * w;
    }
    let peak = out.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let limit = 10f64.powf(-0.3 / 20.0);
    let scale = if peak > limit { limit / peak } else { 1.0 };
    out.into_iter().map(|x| (x * scale) as f32).collect()
}

/// A 16-bit mono PCM WAV file at [`SAMPLE_RATE`].
pub fn wav_bytes(samples: &[f32]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    b.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for &x in samples {
        let v = (x as f64 * 32767.0).round().clamp(-32768.0, 32767.0) as i16;
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}
