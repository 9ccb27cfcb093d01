//! duet-dsp: audio bytes to the paper's features (section 2.2).
//!
//! One responsibility: decode and resample audio to 16 kHz mono, then compute the openSMILE-compatible
//! MFCC12_E_D_A frames and the two librosa-compatible mel spectrograms. No burn; native and wasm32.
