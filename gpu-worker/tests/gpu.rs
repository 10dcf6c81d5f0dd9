//! The GPU path on a real NVIDIA GPU: NVDEC against libavcodec (bit
//! exact), the CUDA scaler against its CPU reference (within 1 LSB), and
//! the transcode job's pipeline on the GPU (NVENC, or libx264 after
//! download) whose HLS `ffmpeg -xerror` decodes clean, cut into the same
//! segments as the software path. Without a GPU each test prints that
//! it did NOT run and returns: they never count as passed there
//! (`scripts/gpu-check.sh` runs them on a GPU machine).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use tokio::sync::Semaphore;
use vodfarm_core::ladder::RenditionLadder;
use vodfarm_core::playlists::Packaging;
use vodfarm_gpu_worker::media::gpu::frames::{planes_of, OwnedSource};
use vodfarm_gpu_worker::media::gpu::plan::Device;
use vodfarm_gpu_worker::media::gpu::select::{GpuAccess, GpuEnvironment};
use vodfarm_gpu_worker::media::probe::Limits;
use vodfarm_gpu_worker::media::stages::StageChoice;
use vodfarm_gpu_worker::media::transcode::{transcode, TranscodeOutput, TranscodeRequest};
use vodfarm_gpu_worker::media::JobControl;
use vodfarm_native::cuda::CudaContext;
use vodfarm_native::nvdec::{Codec, NvdecDecoder};
use vodfarm_native::nvrtc::Nvrtc;
use vodfarm_native::probe::GpuReport;
use vodfarm_native::reference::{scale_ladder, thumbnail_rgb, ChromaSiting};
use vodfarm_native::scaler::{CudaScaler, DeviceSurface, DeviceYuv420};

/// `Some(reason)` when this machine has no usable GPU.
fn no_gpu() -> Option<String> {
    let report = GpuReport::probe();
    match (&report.cuda, report.devices.is_empty()) {
        (Err(e), _) => Some(e.clone()),
        (Ok(_), true) => Some("the CUDA driver sees no device".to_owned()),
        _ => None,
    }
}

macro_rules! require_gpu {
    ($name:literal) => {
        if let Some(why) = no_gpu() {
            println!(
                "GPU test {} did NOT run (no GPU: {why}); it is not counted as passed",
                $name
            );
            return;
        }
    };
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 30 fps H.264 source with B-frames and an AAC tone.
fn source(dir: &Path, size: &str, seconds: &str) -> String {
    let path = dir.join("src.mp4").to_string_lossy().into_owned();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30,noise=alls=12:allf=t"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300",
        "-c:a",
        "aac",
        "-t",
        seconds,
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-bf",
        "2",
        &path,
    ]);
    path
}

#[test]
fn nvdec_output_is_bit_exact_with_libavcodec() {
    require_gpu!("nvdec_output_is_bit_exact_with_libavcodec");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path(), "640x360", "2");
    ffmpeg_next::init().expect("libav");
    // libavcodec's frames, yuv420p.
    let mut input = ffmpeg_next::format::input(&src).expect("open");
    let stream = input
        .streams()
        .best(ffmpeg_next::media::Type::Video)
        .expect("video");
    let index = stream.index();
    let params = stream.parameters();
    let annexb = vodfarm_gpu_worker::media::gpu::annexb::AnnexB::new(
        "h264",
        &vodfarm_native::extradata(&params),
    )
    .expect("avcC");
    let mut dec = ffmpeg_next::codec::context::Context::from_parameters(params)
        .expect("ctx")
        .decoder()
        .video()
        .expect("decoder");
    let ctx = CudaContext::new(0).expect("context");
    let mut nvdec = NvdecDecoder::new(&ctx, Codec::H264, ChromaSiting::Left).expect("nvdec");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let take = |frames: Vec<vodfarm_native::nvdec::DecodedFrame>,
                nvdec: &NvdecDecoder,
                ours: &mut Vec<Vec<u8>>| {
        for f in frames {
            let mut bytes = vec![0u8; f.surface.pitch * (f.surface.height as usize * 3 / 2)];
            f.buffer.download(&mut bytes).expect("download");
            ours.push(bytes);
            nvdec.recycle(f);
        }
    };
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        dec.send_packet(&packet).expect("send");
        let mut frame = ffmpeg_next::frame::Video::empty();
        while dec.receive_frame(&mut frame).is_ok() {
            theirs.push(planes_of(&frame));
        }
        let data = annexb
            .convert(packet.data().unwrap_or_default(), packet.is_key())
            .expect("annexb");
        let frames = nvdec
            .decode(Some(&data), packet.pts().unwrap_or(0))
            .expect("nvdec decode");
        take(frames, &nvdec, &mut ours);
    }
    dec.send_eof().expect("eof");
    let mut frame = ffmpeg_next::frame::Video::empty();
    while dec.receive_frame(&mut frame).is_ok() {
        theirs.push(planes_of(&frame));
    }
    let frames = nvdec.decode(None, 0).expect("flush");
    take(frames, &nvdec, &mut ours);
    assert_eq!(ours.len(), theirs.len(), "frame counts");
    let (w, h) = (640usize, 360usize);
    for (n, (nv12, [y, u, v])) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(&nv12[..w * h], &y[..], "frame {n} luma");
        let uv = &nv12[w * h..w * h + w * h / 2];
        let (nu, nv): (Vec<u8>, Vec<u8>) = uv.chunks(2).map(|p| (p[0], p[1])).unzip();
        assert_eq!(&nu, u, "frame {n} Cb");
        assert_eq!(&nv, v, "frame {n} Cr");
    }
    println!("NVDEC: {} frames bit-exact with libavcodec", ours.len());
}

#[test]
fn cuda_scaler_is_within_one_lsb_of_the_reference() {
    require_gpu!("cuda_scaler_is_within_one_lsb_of_the_reference");
    let ctx = CudaContext::new(0).expect("context");
    let nvrtc = Nvrtc::load().expect("NVRTC (set NVRTC_LIB)");
    let scaler = CudaScaler::new(&ctx, &nvrtc).expect("kernels");
    let stream = ctx.stream().expect("stream");
    for ten_bit in [false, true] {
        let (w, h) = (1920u32, 1080u32);
        let bpp = if ten_bit { 2 } else { 1 };
        let pitch = w as usize * bpp;
        let mut seed = 7u32;
        let mut bytes: Vec<u8> = (0..pitch * (h as usize * 3 / 2))
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((i % 251) as u32 ^ (seed >> 28)) as u8
            })
            .collect();
        if ten_bit {
            for word in bytes.chunks_mut(2) {
                word[0] &= 0xc0; // 10 bits in the high bits
            }
        }
        let mut buf = ctx.alloc(bytes.len()).expect("alloc");
        buf.upload(&bytes).expect("upload");
        let rungs = [(1920u32, 1080u32), (1280, 720), (854, 480), (426, 240)];
        let mut outs: Vec<DeviceYuv420> = rungs
            .iter()
            .map(|&(rw, rh)| DeviceYuv420 {
                buffer: ctx.alloc(DeviceYuv420::bytes(rw, rh)).expect("alloc"),
                width: rw,
                height: rh,
            })
            .collect();
        let surface = DeviceSurface {
            ptr: buf.device_ptr(),
            pitch,
            chroma_row: h as usize,
            width: w,
            height: h,
            ten_bit,
        };
        scaler
            .scale_ladder(&surface, ChromaSiting::Left, &mut outs, &stream)
            .expect("launch");
        stream.synchronize().expect("sync");
        let src = OwnedSource {
            y: bytes[..pitch * h as usize].to_vec(),
            uv: bytes[pitch * h as usize..].to_vec(),
            pitch,
            width: w,
            height: h,
            ten_bit,
        };
        // The thumbnail kernel: a 160x90 tile at (160, 90) of a 480x270 sheet.
        let mut sheet = ctx.alloc(480 * 270 * 3).expect("alloc");
        sheet.upload(&vec![0u8; 480 * 270 * 3]).expect("clear");
        scaler
            .thumbnail(
                &surface,
                ChromaSiting::Left,
                &mut sheet,
                (480, 270),
                (160, 90),
                (160, 90),
                &stream,
            )
            .expect("thumbnail launch");
        stream.synchronize().expect("sync");
        let mut rgb = vec![0u8; 480 * 270 * 3];
        sheet.download(&mut rgb).expect("download");
        let want = thumbnail_rgb(&src.picture(), ChromaSiting::Left, 160, 90);
        for row in 0..90usize {
            let got = &rgb[((90 + row) * 480 + 160) * 3..((90 + row) * 480 + 320) * 3];
            let exp = &want[row * 160 * 3..(row + 1) * 160 * 3];
            let worst = got
                .iter()
                .zip(exp)
                .map(|(&p, &q)| (i32::from(p) - i32::from(q)).abs())
                .max();
            assert!(
                worst.unwrap_or(0) <= 1,
                "thumbnail row {row} ten_bit={ten_bit}: off by {worst:?}"
            );
        }
        assert!(
            rgb[..90 * 480 * 3].iter().all(|&b| b == 0),
            "the tile wrote outside its place"
        );
        let reference = scale_ladder(&src.picture(), ChromaSiting::Left, &rungs);
        for (gpu, cpu) in outs.iter().zip(&reference) {
            let (y, u, v) = gpu.download().expect("download");
            for (name, a, b) in [("Y", &y, &cpu.y), ("U", &u, &cpu.u), ("V", &v, &cpu.v)] {
                let worst = a
                    .iter()
                    .zip(b.iter())
                    .map(|(&p, &q)| (i32::from(p) - i32::from(q)).abs())
                    .max();
                assert!(
                    worst.unwrap_or(0) <= 1,
                    "{}x{} {name} ten_bit={ten_bit}: off by {worst:?}",
                    gpu.width,
                    gpu.height
                );
            }
        }
    }
    println!("CUDA scaler: every rung and the sprite tile within 1 LSB of the CPU reference (NV12 and P010)");
}

#[test]
fn probe_on_a_gpu_lists_devices() {
    require_gpu!("probe_on_a_gpu_lists_devices");
    let report = GpuReport::probe();
    let d = &report.devices[0];
    assert!(d.info.total_memory > 0);
    println!("{report:#?}");
}

/// The transcode job's own pipeline (`transcode()`, what the transcode
/// and chunk jobs call) with the worker's GPU access: the frames take the
/// GPU path, and the HLS it writes has the software path's layout.
fn wired_transcode(dir: &Path, src: &Path, gpu: Option<GpuAccess>) -> TranscodeOutput {
    let request = TranscodeRequest {
        source: src.to_path_buf(),
        work_dir: dir.to_path_buf(),
        ladder: RenditionLadder::default(),
        segment_seconds: 2,
        preset: "veryfast".into(),
        stages: StageChoice::SOFTWARE,
        limits: Limits::default(),
        packaging: Packaging::Ts,
        chunk: None,
        gpu,
    };
    transcode(&request, &JobControl::default(), |_| Ok(())).expect("transcode")
}

#[test]
fn the_transcode_job_runs_on_the_gpu_and_keeps_the_hls_layout() {
    require_gpu!("the_transcode_job_runs_on_the_gpu_and_keeps_the_hls_layout");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = std::path::PathBuf::from(source(dir.path(), "1280x720", "5"));
    let cpu_out = wired_transcode(&dir.path().join("cpu"), &src, None);
    let env = Arc::new(GpuEnvironment::probe(true));
    // As probed (NVENC where the GPU has it), then with no NVENC session
    // free: the download + libx264 path (A100/H100/H200) on any GPU.
    for (label, sessions) in [("as probed", 16), ("no NVENC session free", 0)] {
        let access = GpuAccess {
            env: Arc::clone(&env),
            nvenc_sessions: Arc::new(Semaphore::new(sessions)),
            metrics: None,
        };
        let out_dir = dir.path().join(format!("gpu{sessions}"));
        let gpu_out = wired_transcode(&out_dir, &src, Some(access));
        assert_eq!(
            (gpu_out.plan.decode.device, gpu_out.plan.scale.device),
            (Device::Gpu(0), Device::Gpu(0)),
            "{label}: the job's plan: {:?}",
            gpu_out.plan
        );
        assert_eq!(gpu_out.decoder, "nvdec");
        if sessions == 0 {
            assert_eq!(gpu_out.plan.encode.device, Device::Cpu);
        }
        assert_eq!(gpu_out.frames, cpu_out.frames);
        assert_eq!(gpu_out.renditions.len(), cpu_out.renditions.len());
        for (g, c) in gpu_out.renditions.iter().zip(&cpu_out.renditions) {
            assert_eq!((g.width, g.height), (c.width, c.height), "{}", g.name);
            let durations = |r: &vodfarm_gpu_worker::media::hls::RenditionSummary| {
                r.segments.iter().map(|s| s.duration).collect::<Vec<_>>()
            };
            assert_eq!(
                durations(g),
                durations(c),
                "{label} {}: segment boundaries",
                g.name
            );
            let playlist = out_dir.join(&g.name).join("index.m3u8");
            std::fs::write(&playlist, g.media_playlist_for(Packaging::Ts)).expect("playlist");
            ffmpeg(&[
                "-xerror",
                "-i",
                &playlist.to_string_lossy(),
                "-f",
                "null",
                "-",
            ]);
        }
        println!(
            "GPU job path ({label}: {}, decoder {}): {} renditions x {} frames, HLS decodes clean, same segments as the CPU path",
            gpu_out.plan.summary(),
            gpu_out.decoder,
            gpu_out.renditions.len(),
            gpu_out.frames
        );
    }
}
