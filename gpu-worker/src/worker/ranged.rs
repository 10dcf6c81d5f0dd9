//! Ranged reads of an MP4/MOV original: its top-level boxes, and chosen
//! byte ranges fetched into a sparse scratch file of the original's size
//! (every byte at its own offset, holes elsewhere), which libavformat
//! opens as the original. The MP4 demuxer finds every packet through the
//! index in `moov`, so a copy holding `moov` and some packets' bytes
//! demuxes exactly like the original; packets in holes read as zeros and
//! are never kept (`media::chunks` checks each kept packet's offset).
//! This works the same on every store (S3 ranged GETs, local files).

use super::failure::JobFailure;
use super::Worker;
use crate::media::MediaError;
use futures::StreamExt;
use prometheus::IntCounter;
use std::path::Path;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use vodfarm_core::jobs::LeasedJob;
use vodfarm_core::store::{ByteRange, StoreError};

/// Boxes scanned at most (a fragmented MP4 has thousands: not ranged).
const MAX_BOXES: usize = 64;

/// The boxes but the media data may not exceed this (a `moov` indexes
/// ~12 bytes per packet: 20 MiB for 4 hours of 60 fps video and audio).
const MAX_HEADER_BYTES: u64 = 256 << 20;

/// The first read: `ftyp`, and `moov` too when it comes first.
const FIRST_READ: u64 = 64 << 10;

/// The top-level boxes of an MP4/MOV original that a ranged reader needs.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MovBoxes {
    /// Every box but the media data, and each media data box's header:
    /// what a demuxer reads before any packet.
    pub(super) header: Vec<[u64; 2]>,
    /// The first media data box's payload.
    pub(super) media: [u64; 2],
}

/// A box header: `(box size, type, header size)`; `None` when the bytes
/// are not one (the box must fit in `left` bytes).
fn parse_box_header(bytes: &[u8], left: u64) -> Option<(u64, [u8; 4], u64)> {
    let size32 = u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?);
    let kind: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
    if !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return None;
    }
    let (size, header) = match size32 {
        0 => (left, 8),
        1 => (u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?), 16),
        n => (u64::from(n), 8),
    };
    (size >= header && size <= left).then_some((size, kind, header))
}

/// The boxes of a file of `size` bytes, given each box's header bytes
/// (`read(offset)`: up to 16 bytes at `offset`). `None` when it is not a
/// plain (unfragmented) MP4/MOV: no `moov`, no media data, a `moof`, too
/// many boxes or too big a header.
fn scan_boxes(size: u64, mut read: impl FnMut(u64) -> Option<Vec<u8>>) -> Option<MovBoxes> {
    let mut offset = 0u64;
    let mut header = Vec::new();
    let mut media: Option<[u64; 2]> = None;
    let mut moov = false;
    let mut boxes = 0;
    while offset < size {
        boxes += 1;
        if boxes > MAX_BOXES {
            return None;
        }
        let (len, kind, head) = parse_box_header(&read(offset)?, size - offset)?;
        match &kind {
            b"moof" | b"mfra" => return None,
            b"mdat" => {
                header.push([offset, offset + head]);
                media.get_or_insert([offset + head, offset + len]);
            }
            other => {
                moov |= other == b"moov";
                header.push([offset, offset + len]);
            }
        }
        offset += len;
    }
    let bytes: u64 = header.iter().map(|[a, b]| b - a).sum();
    (moov && bytes <= MAX_HEADER_BYTES)
        .then_some(())
        .and(media)
        .map(|media| MovBoxes { header, media })
}

/// An original read by ranges; counts what it reads.
pub(super) struct RangedOriginal<'a> {
    worker: &'a Worker,
    key: &'a str,
    counter: IntCounter,
    /// The original's size.
    pub(super) size: u64,
    /// Bytes read so far.
    pub(super) bytes_read: u64,
}

impl<'a> RangedOriginal<'a> {
    /// The job's input object, checked against the size limit.
    pub(super) async fn open(
        worker: &'a Worker,
        job: &'a LeasedJob,
    ) -> Result<RangedOriginal<'a>, JobFailure> {
        let key = job.input_path.as_str();
        let meta = match worker.store.head(key).await {
            Ok(m) => m,
            Err(StoreError::NotFound(_) | StoreError::InvalidKey(_)) => {
                return Err(JobFailure::MissingOriginal)
            }
            Err(e) => return Err(e.into()),
        };
        if meta.size == 0 {
            return Err(MediaError::Empty.into());
        }
        if meta.size > worker.limits.max_input_bytes {
            return Err(MediaError::FileTooLarge {
                size: meta.size,
                max: worker.limits.max_input_bytes,
            }
            .into());
        }
        Ok(RangedOriginal {
            worker,
            key,
            counter: worker
                .metrics
                .source_bytes
                .with_label_values(&[job.job_type.as_str()]),
            size: meta.size,
            bytes_read: 0,
        })
    }

    /// Bytes `[a, b)`, passed chunk by chunk to `sink`.
    async fn read_into(
        &mut self,
        [a, b]: [u64; 2],
        mut sink: impl AsyncWriteExt + Unpin,
    ) -> Result<(), JobFailure> {
        if a >= b {
            return Ok(());
        }
        let object = self
            .worker
            .store
            .get(self.key, Some(ByteRange::Bounded(a, b - 1)))
            .await?;
        if object.meta.size != self.size || object.range != (a, b - 1) {
            return Err(JobFailure::Incomplete(format!(
                "{} changed while it was read (size {}, range {:?})",
                self.key, object.meta.size, object.range
            )));
        }
        let mut body = object.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            self.bytes_read += chunk.len() as u64;
            self.counter.inc_by(chunk.len() as u64);
            sink.write_all(&chunk).await.map_err(MediaError::Io)?;
        }
        Ok(())
    }

    /// The original's top-level boxes; `None` when it is not a plain
    /// MP4/MOV.
    pub(super) async fn boxes(&mut self) -> Result<Option<MovBoxes>, JobFailure> {
        let mut first = Vec::new();
        self.read_into([0, FIRST_READ.min(self.size)], &mut first)
            .await?;
        // Box headers past the first read, fetched one by one (a plain
        // MP4 has three or four boxes).
        let mut headers = std::collections::BTreeMap::new();
        loop {
            let mut missing = None;
            let scanned = scan_boxes(self.size, |offset| {
                let end = (offset + 16).min(self.size);
                if end <= first.len() as u64 {
                    return Some(first[offset as usize..end as usize].to_vec());
                }
                let got = headers.get(&offset).cloned();
                if got.is_none() {
                    missing = Some([offset, end]);
                }
                got
            });
            match missing {
                Some(range) if headers.len() < MAX_BOXES => {
                    let mut bytes = Vec::new();
                    self.read_into(range, &mut bytes).await?;
                    headers.insert(range[0], bytes);
                }
                Some(_) => return Ok(None),
                None => return Ok(scanned),
            }
        }
    }

    /// Writes `ranges` (sorted) into a sparse file at `dest` of the
    /// original's size.
    pub(super) async fn fetch(
        &mut self,
        ranges: &[[u64; 2]],
        dest: &Path,
    ) -> Result<(), JobFailure> {
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(MediaError::Io)?;
        file.set_len(self.size).await.map_err(MediaError::Io)?;
        for &[a, b] in ranges {
            if b > self.size {
                return Err(JobFailure::BadParameters(format!(
                    "byte range {a}..{b} is past the original's {} bytes",
                    self.size
                )));
            }
            file.seek(std::io::SeekFrom::Start(a))
                .await
                .map_err(MediaError::Io)?;
            self.read_into([a, b], &mut file).await?;
        }
        file.flush().await.map_err(MediaError::Io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], payload: usize) -> Vec<u8> {
        let mut b = ((payload + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.resize(payload + 8, 0);
        b
    }

    fn scan(file: &[u8]) -> Option<MovBoxes> {
        scan_boxes(file.len() as u64, |o| {
            let o = o as usize;
            Some(file[o..(o + 16).min(file.len())].to_vec())
        })
    }

    #[test]
    fn plain_mp4s_are_scanned_with_moov_before_or_after_the_media() {
        let file = [
            mp4_box(b"ftyp", 24),
            mp4_box(b"free", 0),
            mp4_box(b"mdat", 1000),
            mp4_box(b"moov", 300),
        ]
        .concat();
        let boxes = scan(&file).unwrap();
        assert_eq!(boxes.media, [48, 1048]);
        assert_eq!(boxes.header, [[0, 32], [32, 40], [40, 48], [1048, 1356]]);
        let faststart = [
            mp4_box(b"ftyp", 24),
            mp4_box(b"moov", 300),
            mp4_box(b"mdat", 1000),
        ]
        .concat();
        assert_eq!(scan(&faststart).unwrap().media, [348, 1348]);
        // A 64-bit media data size.
        let mut large = mp4_box(b"ftyp", 8);
        large.extend_from_slice(&1u32.to_be_bytes());
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&116u64.to_be_bytes());
        large.resize(large.len() + 100, 0);
        large.extend(mp4_box(b"moov", 10));
        assert_eq!(scan(&large).unwrap().media, [32, 132]);
    }

    #[test]
    fn other_files_are_not_ranged() {
        // Fragmented, no moov, no media data, a box past the end, not boxes.
        let frag = [
            mp4_box(b"ftyp", 8),
            mp4_box(b"moov", 8),
            mp4_box(b"moof", 8),
        ]
        .concat();
        assert_eq!(scan(&frag), None);
        assert_eq!(
            scan(&[mp4_box(b"ftyp", 8), mp4_box(b"mdat", 8)].concat()),
            None
        );
        assert_eq!(
            scan(&[mp4_box(b"ftyp", 8), mp4_box(b"moov", 8)].concat()),
            None
        );
        let mut short = [
            mp4_box(b"ftyp", 8),
            mp4_box(b"moov", 8),
            mp4_box(b"mdat", 8),
        ]
        .concat();
        short.truncate(short.len() - 1);
        assert_eq!(scan(&short), None);
        assert_eq!(scan(&[0x1a, 0x45, 0xdf, 0xa3, 0, 0, 0, 0, 0, 0]), None);
    }
}
