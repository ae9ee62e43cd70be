//! Integration tests of the gateway binary crate: the HTTP surface and the command line.

mod admin_api;
mod cli;
mod endpoints;
mod fidelity;
mod http;
mod limits;
mod reload;
mod replicas;
mod support;
mod tls;
mod ui;
