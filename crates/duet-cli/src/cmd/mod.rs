//! One module per `duet` subcommand.

pub mod features;
