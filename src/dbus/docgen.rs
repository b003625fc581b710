//! Man pages and shell completions from clap definitions (see [`generate`]).
