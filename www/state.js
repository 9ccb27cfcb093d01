// The state the page's panels share: the loaded model, its classes, the backend and the results.

/** The classes shown before a model has loaded (the bundled model's). */
export const FALLBACK_CLASSES = ["angry", "happy", "neutral", "sad"];

export const state = {
  classes: FALLBACK_CLASSES,
  model: null,
  backend: null,
  results: [], // {name, durationS, probabilities: {class: p}, label, timeline, backend, ms}
  busy: 0,
};
