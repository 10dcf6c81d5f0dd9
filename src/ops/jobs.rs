//! `vodfarm jobs`: list, show, retry and cancel transcoding jobs.

use super::client::{Operator, OperatorArgs};
use super::table::{ago, clip, print_json, render};
use vodfarm_core::jobs::{JobList, JobStatus, JobType, JobView, RetryReport};

/// Flags of `vodfarm jobs`.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Coordinator, token, output format.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// The subcommands of `vodfarm jobs`.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs in this status (pending, processing, completed,
        /// failed, cancelled).
        #[arg(long)]
        status: Option<JobStatus>,
        /// Only jobs of this type (transcode, thumbnail, manifest).
        #[arg(long = "type")]
        job_type: Option<JobType>,
        /// Only the jobs of this video (its public id).
        #[arg(long)]
        video: Option<String>,
        /// At most this many (1..=1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one job in full.
    Show {
        /// The job's id.
        id: i64,
    },
    /// Reopen a failed or cancelled job (and its video's other failed
    /// jobs) with fresh attempts.
    Retry {
        /// The job's id.
        #[arg(required_unless_present = "video", conflicts_with = "video")]
        id: Option<i64>,
        /// Retry every failed or cancelled job of this video instead.
        #[arg(long)]
        video: Option<String>,
    },
    /// Cancel a pending or running job.
    Cancel {
        /// The job's id.
        id: i64,
    },
}

/// Runs `vodfarm jobs`.
pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let op = Operator::new(&args.operator)?;
    let json = args.operator.json;
    match args.command {
        JobsCommand::List {
            status,
            job_type,
            video,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(s) = status {
                query.push(format!("status={}", s.as_str()));
            }
            if let Some(t) = job_type {
                query.push(format!("job_type={}", t.as_str()));
            }
            if let Some(v) = video {
                query.push(format!("video_id={}", urlencode(&v)));
            }
            let list: JobList = op.get(&format!("/v1/jobs?{}", query.join("&"))).await?;
            if json {
                return print_json(&list);
            }
            print!("{}", job_table(&list.jobs));
            if list.jobs.is_empty() {
                println!("(no jobs)");
            }
        }
        JobsCommand::Show { id } => {
            let job: JobView = op.get(&format!("/v1/jobs/{id}")).await?;
            if json {
                return print_json(&job);
            }
            print!("{}", job_details(&job));
        }
        JobsCommand::Retry { id, video } => {
            let jobs = match (id, video) {
                (Some(id), _) => vec![op.post::<JobView>(&format!("/v1/jobs/{id}/retry")).await?],
                (None, Some(v)) => {
                    op.post::<RetryReport>(&format!("/v1/videos/{}/retry", urlencode(&v)))
                        .await?
                        .jobs
                }
                (None, None) => anyhow::bail!("give a job id or --video"),
            };
            if json {
                return print_json(&jobs);
            }
            print!("{}", job_table(&jobs));
        }
        JobsCommand::Cancel { id } => {
            let job: JobView = op.post(&format!("/v1/jobs/{id}/cancel")).await?;
            if json {
                return print_json(&job);
            }
            print!("{}", job_table(std::slice::from_ref(&job)));
        }
    }
    Ok(())
}

/// A video id or other path/query value, percent-encoded.
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Jobs as a table.
pub(crate) fn job_table(jobs: &[JobView]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.video_id.clone(),
                j.job_type.as_str().to_owned(),
                j.status.as_str().to_owned(),
                format!("{}%", j.progress),
                format!("{}/{}", j.attempts, j.max_attempts),
                j.worker_id.clone().unwrap_or_else(|| "-".into()),
                ago(j.created_at),
                clip(j.error_message.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    render(
        &[
            "ID", "VIDEO", "TYPE", "STATUS", "PROGRESS", "ATTEMPTS", "WORKER", "CREATED", "ERROR",
        ],
        &rows,
    )
}

fn time(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.to_rfc3339())
}

/// One job, a field per line.
fn job_details(j: &JobView) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let fields: Vec<(&str, String)> = vec![
        ("id", j.id.to_string()),
        ("video", j.video_id.clone()),
        ("type", j.job_type.as_str().to_owned()),
        ("status", j.status.as_str().to_owned()),
        ("progress", format!("{}%", j.progress)),
        ("attempts", format!("{} of {}", j.attempts, j.max_attempts)),
        ("priority", j.priority.to_string()),
        ("worker", opt(&j.worker_id)),
        ("depends on", format!("{:?}", j.depends_on)),
        ("capabilities", j.required_capabilities.join(", ")),
        ("input", j.input_path.clone()),
        ("output", opt(&j.output_path)),
        ("parameters", j.parameters.to_string()),
        ("error", opt(&j.error_message)),
        (
            "created",
            format!("{} ({})", j.created_at.to_rfc3339(), ago(j.created_at)),
        ),
        ("due", j.run_after.to_rfc3339()),
        ("started", time(&j.started_at)),
        ("lease until", time(&j.lease_expires_at)),
        ("completed", time(&j.completed_at)),
    ];
    fields
        .into_iter()
        .map(|(k, v)| format!("{k:<13} {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_ids_are_encoded() {
        assert_eq!(urlencode("v_abc-1"), "v_abc-1");
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
    }
}
