//! kycshare: move Sumsub-verified customers into Banxa through the identity
//! token sharing API, from a CSV export.
//!
//! The crate is a streaming pipeline, one stage per module:
//!
//! ```text
//! CSV -> input -> request -> dispatch -> output
//! ```
//!
//! `cmd` holds the wiring of each subcommand; `mock` is the local Banxa
//! emulator (it deliberately shares no signing code with `request`);
//! `sumsub` is the client that mints share tokens just in time.

pub mod cli;
pub mod cmd;
pub mod credentials;
pub mod dispatch;
pub mod http;
pub mod input;
pub mod ledger;
pub mod logging;
pub mod mock;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod request;
pub mod secret;
