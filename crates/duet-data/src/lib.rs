//! duet-data: corpora (IEMOCAP reader, manifests, the synthetic acted-prosody corpus), folds and
//! protocols, the feature cache, batching and metrics (WA / UA / F1 / confusion). Native only.
