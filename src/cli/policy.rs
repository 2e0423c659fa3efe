//! `lifeboat policy check`

use std::path::PathBuf;
use std::process::ExitCode;

use super::Outcome;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate a policy file without touching anything (no network, no
    /// secrets read). Errors name the file, line and column.
    Check {
        /// The policy file.
        file: PathBuf,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Check { file, json } => {
            let p = crate::policy::Policy::load(&file)?;
            // Recipients files are local; read them so a typo shows now.
            let recipients = p.encryption.all_recipients()?;
            let sources: Vec<_> = p.sources.iter().map(|s| s.name.to_string()).collect();
            if json {
                super::print_json(&serde_json::json!({
                    "file": file,
                    "valid": true,
                    "name": p.name,
                    "repository": p.repository.url.to_string(),
                    "sources": sources,
                    "recipients": recipients.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                    "schedule": p.schedule.as_ref().map(|s| s.expression.clone()),
                }));
            } else {
                println!(
                    "{}: ok (policy '{}', repository {}, sources: {})",
                    file.display(),
                    p.name,
                    p.repository.url,
                    sources.join(", ")
                );
            }
            Ok(Outcome::Ok.into())
        }
    }
}
