//! `lifeboat keygen`

use std::path::PathBuf;
use std::process::ExitCode;

use super::Outcome;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Keep the identity file secret and out of the backup job: backups need only the recipient.\n\
Store a copy somewhere you can reach during an incident (a password manager, a sealed envelope)."
)]
pub struct Args {
    /// Where to write the identity (created with mode 0600; never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Print {"identity_file":..., "recipient":...} as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let recipient = crate::keys::generate(&args.out)?;
    if args.json {
        super::print_json(&serde_json::json!({
            "identity_file": args.out,
            "recipient": recipient,
        }));
    } else {
        eprintln!(
            "wrote the identity to {}; put this recipient in the policy's encryption.recipients:",
            args.out.display()
        );
        println!("{recipient}");
    }
    Ok(Outcome::Ok.into())
}
