//! One module per `wrenn` subcommand group.

pub mod image;
pub mod run;
