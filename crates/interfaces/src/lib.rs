//! Echelon interfaces: the HTTP gateway, the command line and the composition root.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod demo;
pub mod http;
