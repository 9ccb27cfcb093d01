// The results as files to keep: CSV (one row per file) and JSON (with the model, the backend and
// each file's timeline), and the download of either.

export function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** `results`: the page's result records ({name, durationS, probabilities: {class: p}, label, backend}). */
export function resultsCsv(classes, results) {
  const quote = (s) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const lines = [["file", "duration_s", ...classes, "label", "backend"].join(",")];
  for (const r of results) {
    lines.push([quote(r.name), r.durationS.toFixed(3), ...classes.map((c) => (r.probabilities[c] ?? NaN).toFixed(6)), r.label, r.backend].join(","));
  }
  return lines.join("\n") + "\n";
}

export function resultsJson(model, backend, results) {
  const doc = {
    model: model && { kind: model.kind, classes: model.classes, provenance: model.provenance || null },
    backend,
    results: results.map((r) => ({
      file: r.name,
      duration_s: r.durationS,
      probabilities: r.probabilities,
      label: r.label,
      uncertain: r.uncertain,
      noisy: r.noisy,
      speech_to_noise_db: r.speechToNoiseDb,
      timeline: r.timeline && r.timeline.map((s) => ({ start_s: s.startS, end_s: s.endS, probabilities: s.probabilities, label: s.label })),
    })),
  };
  return JSON.stringify(doc, null, 2) + "\n";
}
