//! The one error type of the crate. Every message names what is wrong and where: the file and line of a
//! label or manifest line, the utterance, the missing path, the tool and the apt package that has it.

use std::fmt;
use std::path::PathBuf;

/// Why a corpus, a label map, a protocol or a synthetic render could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read, listed or written.
    #[error("{path}: {source}")]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A corpus specification other than `iemocap:DIR` or `manifest:FILE`.
    #[error("unknown corpus '{0}': expected iemocap:DIR or manifest:FILE (CSV or JSONL)")]
    CorpusSpec(String),
    /// A label line (IEMOCAP) that does not have the release's format.
    #[error("{}:{line}: malformed label line: {message}\n  the line: {text:?}", file.display())]
    LabelLine {
        /// The label file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
        /// The line as read.
        text: String,
    },
    /// A label that is not one of the corpus's codes or of the expected classes.
    #[error("{}:{line}: unknown label '{label}' (known: {known})", file.display())]
    UnknownLabel {
        /// The label or manifest file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The label as written.
        label: String,
        /// The labels that would have been accepted.
        known: String,
    },
    /// An IEMOCAP tree whose files do not match its label lines (missing or unexpected WAVs, a
    /// missing session, a duplicate utterance). Every problem is listed (the first 50 in the message).
    #[error("IEMOCAP at {}: {} problem(s):\n{}", root.display(), problems.len(), ProblemList(problems))]
    IemocapLayout {
        /// The release directory.
        root: PathBuf,
        /// One line per problem, each naming its file.
        problems: Vec<String>,
    },
    /// A well-formed IEMOCAP tree whose 4-class counts differ from the release's (docs/reference.md §4).
    #[error(
        "IEMOCAP at {}: the 4-class selection has {found} utterances, the complete release has {expected}; per session and class (found / expected):\n{table}",
        root.display()
    )]
    IemocapCounts {
        /// The release directory.
        root: PathBuf,
        /// Utterances found.
        found: usize,
        /// Utterances expected (5531).
        expected: usize,
        /// The comparison table, with the differing cells marked.
        table: String,
    },
    /// A manifest line that cannot be used (bad JSON, empty path or label, duplicate id, missing file).
    #[error("{}:{line}: {message}", file.display())]
    Manifest {
        /// The manifest file.
        file: PathBuf,
        /// 1-based line number (the header is line 1 of a CSV).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A manifest without a required column / field.
    #[error("{}: no {column} column (accepted names: {accepted}; found: {found})", file.display())]
    MissingColumn {
        /// The manifest file.
        file: PathBuf,
        /// The role of the column (path, label).
        column: &'static str,
        /// The names accepted for it.
        accepted: String,
        /// The columns / fields the file has.
        found: String,
    },
    /// Audio files named by a manifest that do not exist (all of them listed, the first 50 in the message).
    #[error("{}: {} audio file(s) named in the manifest do not exist:\n{}", manifest.display(), problems.len(), ProblemList(problems))]
    MissingAudio {
        /// The manifest file.
        manifest: PathBuf,
        /// `line N: PATH` for each missing file.
        problems: Vec<String>,
    },
    /// A `--label-map` that does not follow the syntax `FROM=TO,FROM=,*=`.
    #[error("bad label map: {0}")]
    LabelMap(String),
    /// A class with no utterances (after mapping and dropping).
    #[error(
        "{corpus}: class '{class}' has no utterances (classes: {classes}); drop it or map another label onto it with --label-map"
    )]
    EmptyClass {
        /// The corpus name / source.
        corpus: String,
        /// The class without examples.
        class: String,
        /// All classes with their counts.
        classes: String,
    },
    /// A corpus that breaks an invariant (a duplicate utterance id, a label index out of range).
    #[error("{0}")]
    Corpus(String),
    /// A corpus without any usable utterance.
    #[error("{0}: no utterances")]
    EmptyCorpus(String),
    /// A protocol name that is not `loso`, `random5` or `holdout[:SESSION]`.
    #[error("unknown protocol '{0}': expected loso, random5, holdout or holdout:SESSION")]
    ProtocolSpec(String),
    /// A protocol that cannot be applied to this corpus (too few sessions, unknown session, a fold
    /// whose training part lacks a class, folds that overlap).
    #[error("protocol {protocol}: {message}")]
    Protocol {
        /// The protocol as written.
        protocol: String,
        /// What is wrong.
        message: String,
    },
    /// An undecodable audio file under `--on-bad-audio fail`.
    #[error(
        "utterance {id}: cannot decode {}: {reason} (use --on-bad-audio skip to leave such files out)",
        path.display()
    )]
    BadAudio {
        /// The utterance id.
        id: String,
        /// Its audio file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// A `--on-bad-audio` value other than `skip` or `fail`.
    #[error("unknown --on-bad-audio policy '{0}': expected skip or fail")]
    BadAudioPolicy(String),
    /// A directory (run directory, synthetic corpus output) that cannot be created or written to.
    #[error("cannot write to directory {}: {source}", path.display())]
    Unwritable {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A speech synthesiser or audio tool that is not installed.
    #[error(
        "{tool} not found (looked in {searched}); the synthetic corpus needs it: install it with `sudo apt-get install {package}`"
    )]
    MissingTool {
        /// The program name.
        tool: &'static str,
        /// The Debian/Ubuntu package providing it.
        package: &'static str,
        /// The directories searched.
        searched: String,
    },
    /// A tool that ran but failed.
    #[error("{tool} failed ({status}) rendering {what}: {stderr}\n  command: {command}")]
    Tool {
        /// The program name.
        tool: String,
        /// What was being rendered (the utterance id).
        what: String,
        /// Exit status.
        status: String,
        /// The tool's standard error (trimmed).
        stderr: String,
        /// The command line.
        command: String,
    },
    /// Synthetic-corpus options that cannot be satisfied.
    #[error("synth-corpus: {0}")]
    Synth(String),
    /// Training failed (a model error, a non-finite loss, a checkpoint that does not fit).
    #[error("training: {0}")]
    Training(String),
}

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// How many problems a message lists before "... and N more".
pub const MAX_LISTED: usize = 50;

struct ProblemList<'a>(&'a [String]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().take(MAX_LISTED).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        if self.0.len() > MAX_LISTED {
            write!(f, "\n  ... and {} more", self.0.len() - MAX_LISTED)?;
        }
        Ok(())
    }
}
