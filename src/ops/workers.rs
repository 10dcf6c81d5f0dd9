//! `vodfarm workers`: every worker the coordinators heard from, with what
//! it can do and what it runs now.

use super::client::{Operator, OperatorArgs};
use super::table::{ago, print_json, render};
use vodfarm_core::jobs::WorkerList;

/// Flags of `vodfarm workers`.
#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    /// Coordinator, token, output format.
    #[command(flatten)]
    pub operator: OperatorArgs,
}

/// Runs `vodfarm workers`.
pub async fn run(args: WorkersArgs) -> anyhow::Result<()> {
    let op = Operator::new(&args.operator)?;
    let list: WorkerList = op.get("/v1/workers").await?;
    if args.operator.json {
        return print_json(&list);
    }
    let dash = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(",")
        }
    };
    let rows: Vec<Vec<String>> = list
        .workers
        .iter()
        .map(|w| {
            vec![
                w.worker_id.clone(),
                dash(&w.capabilities),
                dash(&w.job_types),
                w.jobs_running.to_string(),
                ago(w.last_seen_at),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "WORKER",
                "CAPABILITIES",
                "JOB TYPES",
                "RUNNING",
                "LAST SEEN"
            ],
            &rows
        )
    );
    if rows.is_empty() {
        println!("(no worker has polled any coordinator yet)");
    }
    Ok(())
}
