//! `vodfarm videos show ID`: a video's processing state, renditions and
//! jobs, as the coordinator sees them.

use super::client::{Operator, OperatorArgs};
use super::jobs::{job_table, urlencode};
use super::table::{print_json, render};
use vodfarm_core::jobs::VideoOpsView;

/// Flags of `vodfarm videos`.
#[derive(Debug, clap::Args)]
pub struct VideosArgs {
    /// Coordinator, token, output format.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: VideosCommand,
}

/// The subcommands of `vodfarm videos`.
#[derive(Debug, clap::Subcommand)]
pub enum VideosCommand {
    /// Show a video: status, error, renditions and every job.
    Show {
        /// The video's public id.
        id: String,
    },
}

/// Runs `vodfarm videos`.
pub async fn run(args: VideosArgs) -> anyhow::Result<()> {
    let op = Operator::new(&args.operator)?;
    match args.command {
        VideosCommand::Show { id } => {
            let v: VideoOpsView = op.get(&format!("/v1/videos/{}", urlencode(&id))).await?;
            if args.operator.json {
                return print_json(&v);
            }
            print!("{}", video_details(&v));
        }
    }
    Ok(())
}

fn video_details(v: &VideoOpsView) -> String {
    let mut out = String::new();
    let mut field = |k: &str, val: String| out.push_str(&format!("{k:<10} {val}\n"));
    field("video", v.video_id.clone());
    field("title", v.title.clone());
    field("channel", v.channel_id.clone());
    field(
        "status",
        format!("{} ({}%)", v.status, v.processing_progress),
    );
    field("privacy", v.privacy.clone());
    field("duration", format!("{} s", v.duration_seconds));
    if let Some(size) = v.original_size_bytes {
        field("original", format!("{size} bytes"));
    }
    if let Some(t) = v.uploaded_at {
        field("uploaded", t.to_rfc3339());
    }
    if let Some(e) = &v.processing_error {
        field("error", e.clone());
    }
    out.push_str("\nrenditions\n");
    if v.encodings.is_empty() {
        out.push_str("(none yet)\n");
    } else {
        let rows: Vec<Vec<String>> = v
            .encodings
            .iter()
            .map(|e| {
                let size = match (e.width, e.height) {
                    (Some(w), Some(h)) => format!("{w}x{h}"),
                    _ => "-".into(),
                };
                vec![
                    e.resolution.clone(),
                    size,
                    format!("{} kb/s", e.bitrate / 1000),
                    e.segment_count.map_or("-".into(), |n| n.to_string()),
                    e.file_size_bytes.to_string(),
                    e.manifest_path.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        out.push_str(&render(
            &[
                "RENDITION",
                "SIZE",
                "BITRATE",
                "SEGMENTS",
                "BYTES",
                "PLAYLIST",
            ],
            &rows,
        ));
    }
    out.push_str("\njobs\n");
    out.push_str(&job_table(&v.jobs));
    out
}
