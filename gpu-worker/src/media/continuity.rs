//! MPEG-TS continuity counters that every segment can compute alone.
//!
//! HLS clients read a rendition's segments as one transport stream (the
//! ffmpeg HLS demuxer feeds them to one MPEG-TS demuxer), so each PID's
//! 4-bit continuity counter must continue from the previous segment's
//! last packet, or the first packets of every segment are flagged as
//! corrupt. A counter that continues would need the packet counts of every
//! earlier segment, which a chunk encoded on another worker, in any order,
//! does not have.
//!
//! The rule instead: **every segment carries a multiple of 16 payload
//! packets on each PID, and its counters start at 0.** Then every segment
//! ends at counter 15 on every PID, and the next one, starting at 0,
//! continues it, whoever wrote it and whenever. A segment is brought to a
//! multiple of 16 without changing what it carries:
//! - on a PES PID (audio, video), one packet's payload is split over two
//!   packets (adaptation-field stuffing fills the room, as every muxer
//!   does for the last packet of a PES): the same PES bytes in one more
//!   packet;
//! - on a PSI PID (PAT, PMT, SDT), the table's packet is repeated (the
//!   same version of the table: demuxers ignore the copy).
//!
//! Unchunked and chunked transcodes apply the same rule, so their segments
//! have the same structure.

use super::error::MediaError;
use std::collections::HashMap;

/// MPEG-TS packet size.
pub const TS_PACKET: usize = 188;

/// The null PID: padding packets, no counter.
const NULL_PID: u16 = 0x1fff;

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

fn has_payload(p: &[u8]) -> bool {
    p[3] & 0x10 != 0
}

fn has_adaptation(p: &[u8]) -> bool {
    p[3] & 0x20 != 0
}

fn pusi(p: &[u8]) -> bool {
    p[1] & 0x40 != 0
}

/// Where the payload starts (188 when there is none or the adaptation
/// field is malformed).
fn payload_start(p: &[u8]) -> usize {
    if !has_payload(p) {
        return TS_PACKET;
    }
    if has_adaptation(p) {
        (5 + usize::from(p[4])).min(TS_PACKET)
    } else {
        4
    }
}

fn bad(what: &str) -> MediaError {
    MediaError::internal("continuity counters", what.to_owned())
}

/// Splits payload packet `p` in two carrying the same bytes: the first
/// keeps the header flags and adaptation field (PCR, random access), the
/// second continues the payload. Both pad with adaptation stuffing.
fn split(p: &[u8; TS_PACKET]) -> Option<([u8; TS_PACKET], [u8; TS_PACKET])> {
    let start = payload_start(p);
    let payload = &p[start..];
    if payload.len() < 2 {
        return None;
    }
    let k = payload.len() / 2;
    let (first, rest) = payload.split_at(k);
    // The original adaptation field after its length byte (flags, PCR, …,
    // stuffing), kept whole in the first half.
    let af: &[u8] = if has_adaptation(p) { &p[5..start] } else { &[] };
    let build = |flags_and_fields: &[u8], header_pusi: bool, data: &[u8]| -> [u8; TS_PACKET] {
        let mut out = [0xffu8; TS_PACKET];
        out[0] = 0x47;
        out[1] = (p[1] & !0x40) | if header_pusi { 0x40 } else { 0 };
        out[2] = p[2];
        // Adaptation field + payload; the counter is set later.
        out[3] = (p[3] & 0xc0) | 0x30;
        let af_len = TS_PACKET - 4 - 1 - data.len();
        out[4] = af_len as u8;
        if af_len > 0 {
            // Flags (or a flags byte of 0), fields, then 0xff stuffing.
            if flags_and_fields.is_empty() {
                out[5] = 0;
            } else {
                out[5..5 + flags_and_fields.len()].copy_from_slice(flags_and_fields);
            }
        }
        out[TS_PACKET - data.len()..].copy_from_slice(data);
        out
    };
    // `af` fits: the first half carries fewer payload bytes than before.
    let a = build(af, pusi(p), first);
    let b = build(&[], false, rest);
    Some((a, b))
}

/// Whether the PSI packet `p` holds whole sections (so a copy is a whole
/// table too).
fn whole_section(p: &[u8]) -> bool {
    let start = payload_start(p);
    if !pusi(p) || start >= TS_PACKET {
        return false;
    }
    let pointer = usize::from(p[start]);
    let s = start + 1 + pointer;
    if s + 3 > TS_PACKET {
        return false;
    }
    let len = (usize::from(p[s + 1] & 0x0f) << 8) | usize::from(p[s + 2]);
    s + 3 + len <= TS_PACKET
}

/// Applies the rule to one segment's packets: each PID padded to a
/// multiple of 16 payload packets, counters numbered from 0.
pub fn seal_segment(ts: &[u8]) -> Result<Vec<u8>, MediaError> {
    if ts.len() % TS_PACKET != 0 {
        return Err(bad("a segment is not a whole number of TS packets"));
    }
    let mut packets: Vec<[u8; TS_PACKET]> = Vec::with_capacity(ts.len() / TS_PACKET + 64);
    for chunk in ts.chunks_exact(TS_PACKET) {
        if chunk[0] != 0x47 {
            return Err(bad("lost MPEG-TS sync"));
        }
        let mut p = [0u8; TS_PACKET];
        p.copy_from_slice(chunk);
        packets.push(p);
    }
    // Payload packets per PID, and whether the PID carries PES.
    let mut count: HashMap<u16, usize> = HashMap::new();
    let mut pes: HashMap<u16, bool> = HashMap::new();
    for p in &packets {
        let id = pid(p);
        if id == NULL_PID || !has_payload(p) {
            continue;
        }
        *count.entry(id).or_insert(0) += 1;
        if pusi(p) && !pes.contains_key(&id) {
            let s = payload_start(p);
            pes.insert(id, s + 3 <= TS_PACKET && p[s..s + 3] == [0, 0, 1]);
        }
    }
    let mut pids: Vec<u16> = count.keys().copied().collect();
    pids.sort_unstable();
    for id in pids {
        let mut missing = (16 - count[&id] % 16) % 16;
        if missing == 0 {
            continue;
        }
        if pes.get(&id).copied().unwrap_or(false) {
            // Split payload packets from the end backwards, again if one
            // pass is not enough (tiny segments).
            while missing > 0 {
                let mut progress = false;
                let mut i = packets.len();
                while i > 0 && missing > 0 {
                    i -= 1;
                    if pid(&packets[i]) != id || !has_payload(&packets[i]) {
                        continue;
                    }
                    if let Some((a, b)) = split(&packets[i]) {
                        packets[i] = a;
                        packets.insert(i + 1, b);
                        missing -= 1;
                        progress = true;
                    }
                }
                if !progress {
                    return Err(bad("a PES has too few bytes to pad its counters"));
                }
            }
        } else {
            let Some(i) = packets
                .iter()
                .position(|p| pid(p) == id && has_payload(p) && whole_section(p))
            else {
                return Err(bad(
                    "a PSI table spans packets; its counters cannot be padded",
                ));
            };
            let copy = packets[i];
            for _ in 0..missing {
                packets.insert(i + 1, copy);
            }
        }
    }
    // Number from 0; a packet without payload repeats the last counter
    // (15 before the first payload: the previous segment's last).
    let mut next: HashMap<u16, u8> = HashMap::new();
    let mut out = Vec::with_capacity(packets.len() * TS_PACKET);
    for mut p in packets {
        let id = pid(&p);
        if id != NULL_PID {
            let n = next.entry(id).or_insert(0);
            let cc = if has_payload(&p) {
                let c = *n;
                *n = (*n + 1) & 0x0f;
                c
            } else {
                n.wrapping_sub(1) & 0x0f
            };
            p[3] = (p[3] & 0xf0) | cc;
        }
        out.extend_from_slice(&p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PES packet: PUSI with a PES start code, or a continuation, with
    /// `payload` bytes (adaptation stuffing before them).
    fn pes_packet(pid: u16, start: bool, payload: usize, fill: u8) -> [u8; TS_PACKET] {
        let mut p = [0xffu8; TS_PACKET];
        p[0] = 0x47;
        p[1] = ((pid >> 8) as u8 & 0x1f) | if start { 0x40 } else { 0 };
        p[2] = pid as u8;
        if payload == 184 {
            p[3] = 0x10;
        } else {
            p[3] = 0x30;
            p[4] = (183 - payload) as u8;
            if p[4] > 0 {
                p[5] = 0;
            }
        }
        let s = TS_PACKET - payload;
        for (i, b) in p[s..].iter_mut().enumerate() {
            *b = fill.wrapping_add(i as u8);
        }
        if start {
            p[s..s + 3].copy_from_slice(&[0, 0, 1]);
        }
        p
    }

    fn pat() -> [u8; TS_PACKET] {
        let mut p = [0xffu8; TS_PACKET];
        p[..4].copy_from_slice(&[0x47, 0x40, 0x00, 0x10]);
        // pointer 0; table 0, section_length 13.
        p[4..9].copy_from_slice(&[0, 0, 0xb0, 13, 0]);
        p
    }

    fn payload_bytes(ts: &[u8], want: u16) -> Vec<u8> {
        ts.chunks(TS_PACKET)
            .filter(|p| pid(p) == want)
            .flat_map(|p| p[payload_start(p)..].to_vec())
            .collect()
    }

    fn counters(ts: &[u8], want: u16) -> Vec<u8> {
        ts.chunks(TS_PACKET)
            .filter(|p| pid(p) == want && has_payload(p))
            .map(|p| p[3] & 0x0f)
            .collect()
    }

    #[test]
    fn every_pid_ends_at_15_and_carries_the_same_bytes() {
        let mut ts = Vec::new();
        ts.extend(pat());
        for i in 0..5 {
            ts.extend(pes_packet(256, i == 0, 184, i as u8));
        }
        ts.extend(pes_packet(256, false, 40, 9));
        ts.extend(pes_packet(257, true, 100, 3));
        let sealed = seal_segment(&ts).unwrap();
        for id in [0u16, 256, 257] {
            let cc = counters(&sealed, id);
            assert_eq!(cc.len() % 16, 0, "pid {id}: {cc:?}");
            assert_eq!(cc, (0..cc.len() as u8).map(|c| c & 15).collect::<Vec<_>>());
        }
        assert_eq!(payload_bytes(&sealed, 256), payload_bytes(&ts, 256));
        assert_eq!(payload_bytes(&sealed, 257), payload_bytes(&ts, 257));
        // PES starts are kept, once each.
        let starts = sealed
            .chunks(TS_PACKET)
            .filter(|p| pid(p) == 256 && pusi(p))
            .count();
        assert_eq!(starts, 1);
        // A sealed segment is sealed already.
        assert_eq!(seal_segment(&sealed).unwrap(), sealed);
        assert!(seal_segment(&[0u8; 100]).is_err());
    }

    #[test]
    fn a_pcr_stays_in_the_first_half_of_a_split() {
        let mut p = pes_packet(256, true, 150, 1);
        // An adaptation field with a PCR flag and 6 PCR bytes.
        p[4] = 33;
        p[5] = 0x50;
        p[6..12].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        let (a, b) = split(&p).unwrap();
        assert_eq!(&a[5..12], &[0x50, 1, 2, 3, 4, 5, 6]);
        assert!(pusi(&a) && !pusi(&b));
        assert_eq!(b[5], 0, "no flags in the continuation");
        let joined: Vec<u8> = [&a[payload_start(&a)..], &b[payload_start(&b)..]].concat();
        assert_eq!(joined, p[payload_start(&p)..].to_vec());
    }
}
