//! Integration tests of echelon-application: the request engine against in-process scripted
//! backends, on tokio's paused clock.

mod cancel;
mod complete;
mod limits;
mod reload;
mod streaming;
mod support;
