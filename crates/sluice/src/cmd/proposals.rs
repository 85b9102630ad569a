//! `sluice proposals`: the proposal queue from a terminal. A decision here
//! only changes the store; every gateway on the store applies an approval
//! to its own policy file (within about a second) and records the outcome.

use std::process::ExitCode;

use anyhow::Context as _;
use sluice_proposals::{ProposalId, StoreSpec};

use crate::cli::{ProposalsAction, ProposalsArgs};

pub(crate) fn run(args: &ProposalsArgs) -> anyhow::Result<ExitCode> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::cli::default_state_dir);
    let spec = StoreSpec::parse(args.store.as_deref(), &state_dir)
        .map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = sluice_proposals::open(&spec)
            .await
            .map_err(|e| anyhow::anyhow!("proposal store: {e}"))?;
        let id = |raw: &str| -> anyhow::Result<ProposalId> {
            raw.parse()
                .map_err(|e| anyhow::anyhow!("proposal id `{raw}`: {e}"))
        };
        match &args.action {
            ProposalsAction::List { status, limit } => {
                let status = match status.as_deref() {
                    None => None,
                    Some(s) => Some(
                        s.parse()
                            .map_err(|e| anyhow::anyhow!("--status {s}: {e}"))?,
                    ),
                };
                for p in store.list(status, *limit).await? {
                    println!("{}", serde_json::to_string(&p)?);
                }
            }
            ProposalsAction::Show { id: raw } => {
                let p = store
                    .get(&id(raw)?)
                    .await?
                    .with_context(|| format!("no proposal {raw}"))?;
                println!("{}", serde_json::to_string_pretty(&p)?);
            }
            ProposalsAction::Approve {
                id: raw,
                reason,
                actor,
            }
            | ProposalsAction::Reject {
                id: raw,
                reason,
                actor,
            } => {
                let approve = matches!(args.action, ProposalsAction::Approve { .. });
                let p = store
                    .decide(&id(raw)?, actor.clone(), approve, reason.clone())
                    .await?;
                eprintln!(
                    "sluice: proposal {} {} (gateways on this store apply approvals themselves)",
                    p.id.as_str(),
                    p.status.as_str()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
