//! kycshare: move Sumsub-verified customers into Banxa through the identity
//! token sharing API, from a CSV export.
//!
//! The crate is a streaming pipeline, one stage per module, over a bottom
//! layer of shared types:
//!
//! ```text
//! CSV -> input -> request -> dispatch -> output (-> ledger)
//!                 all of them on model
//! ```
//!
//! `pipeline` connects the stages for `run` and `demo` (and the dry run for
//! `validate`); `cmd` holds each subcommand's arguments and wiring; `mock`
//! is the local Banxa and Sumsub emulator (it deliberately shares no
//! signing code with `request`). Imports point one way: no stage imports a
//! stage above it.

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
pub mod report;
pub mod request;
pub mod secret;
