//! `cargo xtask demo-model`: retrain the page's bundled demo model on the synthetic corpus.

use crate::util::Result;

pub fn run(_args: &[String]) -> Result<()> {
    Err("demo-model: not implemented yet".into())
}
