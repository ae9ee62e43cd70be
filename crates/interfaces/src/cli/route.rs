//! `echelon route explain MODEL`: the attempt plan for a name and why each candidate is in or
//! out, from the configuration (offline) or from a running gateway (`--url`).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use echelon_domain::time::Clock;

use super::admin_client::{AdminClient, AdminError};
use super::view::from_json;
use crate::api::ExplanationDto;

/// How to list the names a gateway serves, for messages about unknown names.
const HOW_TO_LIST: &str = "`echelon config show` lists the wrappers, task groups and pools of a configuration; `GET /v1/models` on a running gateway lists every name it serves";

/// Explains `model` from the configuration folder `dir`, without starting a server.
///
/// # Errors
/// When the backends cannot be built.
pub fn explain_offline(model: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    let config = match super::config::load(dir, None) {
        Ok(config) => config,
        Err(report) => {
            eprintln!("{report}");
            eprintln!(
                "error: the configuration in {} does not load",
                dir.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let components = crate::app::build(dir, config, crate::app::BuildOptions::default())?;
    let gateway = &components.gateway;
    match gateway.explain(model) {
        Ok(explanation) => {
            let view = ExplanationDto::new(&explanation, gateway.clock().now());
            print!("{}", view.render());
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let names = gateway.model_names();
            eprintln!("error: {error}{}", did_you_mean(model, &names));
            eprintln!("{HOW_TO_LIST}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Explains `model` as the gateway at `url` sees it now (`GET /admin/route?model=`).
///
/// # Errors
/// When the gateway cannot be reached or refuses the admin key.
pub async fn explain_remote(
    model: &str,
    url: &str,
    admin_key: Option<String>,
) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(url, admin_key, Duration::from_secs(5))?;
    match client.get("/admin/route", &[("model", model)]).await {
        Ok(body) => {
            let view: ExplanationDto = from_json(&body).map_err(|e| {
                anyhow::anyhow!("unexpected answer from {}/admin/route: {e}", client.base())
            })?;
            print!("{}", view.render());
            Ok(ExitCode::SUCCESS)
        }
        Err(AdminError::Status {
            status: 404,
            message,
        }) => {
            eprintln!("error: {message}");
            eprintln!("{HOW_TO_LIST}");
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// `; did you mean `chat`?` for a close name, or nothing.
pub(crate) fn did_you_mean(input: &str, names: &[String]) -> String {
    let lower = input.to_lowercase();
    names
        .iter()
        .map(|name| {
            (
                strsim::damerau_levenshtein(&lower, &name.to_lowercase()),
                name,
            )
        })
        .filter(|(distance, name)| *distance <= (name.chars().count() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| format!("; did you mean `{name}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_close_names() {
        let names = vec![
            "chat".to_owned(),
            "reasoning".to_owned(),
            "pool:fast".to_owned(),
        ];
        assert_eq!(did_you_mean("caht", &names), "; did you mean `chat`?");
        assert_eq!(
            did_you_mean("reasonin", &names),
            "; did you mean `reasoning`?"
        );
        assert_eq!(did_you_mean("something-else", &names), "");
    }
}
