//! The dispatch stage (see submodules).

pub mod limiter;
pub mod policy;
