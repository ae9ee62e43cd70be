//! Echelon interfaces: the HTTP gateway, the command line and the composition root.

pub mod auth;
pub mod openai;
