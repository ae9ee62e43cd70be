//! `echelon status`: a running gateway's live state (`GET /admin/status`) as tables.

use std::process::ExitCode;
use std::time::Duration;

use super::admin_client::AdminClient;
use super::view::from_json;
use crate::api::StatusDto;

/// Prints the state of the gateway at `url`.
///
/// # Errors
/// When the gateway cannot be reached, refuses the admin key, or answers something else.
pub async fn run(url: &str, admin_key: Option<String>) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(url, admin_key, Duration::from_secs(5))?;
    let body = client.get("/admin/status", &[]).await?;
    let view: StatusDto = from_json(&body).map_err(|e| {
        anyhow::anyhow!("unexpected answer from {}/admin/status: {e}", client.base())
    })?;
    println!("gateway {}", client.base());
    print!("{}", view.render());
    Ok(ExitCode::SUCCESS)
}
