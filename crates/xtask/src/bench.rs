//! `cargo xtask bench [dsp|model|train|web|all]`: Duet's figures side by side with its peers, run in
//! the same invocation, written to docs/benchmarks.md.

use crate::util::Result;

pub fn run(_args: &[String]) -> Result<()> {
    Err("bench: not implemented yet".into())
}
