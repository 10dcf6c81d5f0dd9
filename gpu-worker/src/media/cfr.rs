//! [`ConstantRate`]: variable-rate decoded pictures in, a constant-rate
//! sequence of output frame indexes out. Shared by the software pipeline
//! (libav frames) and the GPU one (scaled rungs in device memory), so
//! both cut the same frames into the same segments.

use super::error::MediaError;
use ffmpeg::Rational;
use ffmpeg_next as ffmpeg;

/// Hands one constant-rate picture (and its output index) onwards.
pub(crate) type Emit<'a, T> = dyn FnMut(&T, i64) -> Result<(), MediaError> + 'a;

/// Each output slot gets the latest picture at or before its time
/// (duplicating or dropping as the ffmpeg `fps` filter does).
pub(crate) struct ConstantRate<T> {
    pub(crate) fps: Rational,
    pub(crate) time_base: Rational,
    pub(crate) origin: Option<i64>,
    pub(crate) pending: Option<(T, i64)>,
    pub(crate) next_slot: i64,
    pub(crate) max_gap_slots: i64,
}

impl<T> ConstantRate<T> {
    /// Starts at output frame `first_slot`; `origin`: the timestamp of
    /// slot 0 (`None`: the first picture's).
    pub(crate) fn new(
        fps: Rational,
        time_base: Rational,
        origin: Option<i64>,
        first_slot: i64,
        max_gap_slots: i64,
    ) -> Self {
        ConstantRate {
            fps,
            time_base,
            origin,
            pending: None,
            next_slot: first_slot,
            max_gap_slots,
        }
    }

    fn slot(&self, ts: i64) -> i64 {
        let secs = (ts - self.origin.unwrap_or(ts)) as f64 * f64::from(self.time_base);
        (secs * f64::from(self.fps)).round() as i64
    }

    /// One decoded picture with its timestamp (`None`: the slot after the
    /// pending picture's).
    pub(crate) fn push(
        &mut self,
        picture: T,
        ts: Option<i64>,
        emit: &mut Emit<'_, T>,
    ) -> Result<(), MediaError> {
        let ts = match (ts, self.origin, &self.pending) {
            (Some(t), _, _) => t,
            (None, Some(_), Some((_, last_ts))) => {
                last_ts + (f64::from(self.fps.invert()) / f64::from(self.time_base)).round() as i64
            }
            (None, _, _) => 0,
        };
        if self.origin.is_none() {
            self.origin = Some(ts);
        }
        let slot = self.slot(ts);
        if let Some((last, _)) = self.pending.take() {
            if slot - self.next_slot > self.max_gap_slots {
                let fps = f64::from(self.fps);
                return Err(MediaError::Gap {
                    at: self.next_slot as f64 / fps,
                    seconds: (slot - self.next_slot) as f64 / fps,
                    max: self.max_gap_slots as f64 / fps,
                });
            }
            // Two pictures for one slot: the later one wins (`last` is
            // dropped).
            while self.next_slot < slot {
                emit(&last, self.next_slot)?;
                self.next_slot += 1;
            }
        }
        self.pending = Some((picture, ts));
        Ok(())
    }

    /// A chunk's end: the last picture fills the slots up to `end` (the
    /// next chunk's first frame); returns the frame count (`end`).
    pub(crate) fn finish_until(
        &mut self,
        end: i64,
        emit: &mut Emit<'_, T>,
    ) -> Result<i64, MediaError> {
        if let Some((last, _)) = self.pending.take() {
            while self.next_slot < end {
                emit(&last, self.next_slot)?;
                self.next_slot += 1;
            }
        }
        Ok(self.next_slot.min(end))
    }

    /// Emits the last picture for its own slot(s); returns the frame count.
    pub(crate) fn finish(
        &mut self,
        last_duration: i64,
        emit: &mut Emit<'_, T>,
    ) -> Result<i64, MediaError> {
        if let Some((last, ts)) = self.pending.take() {
            let end = self.slot(ts + last_duration.max(0)).max(self.next_slot + 1);
            let end = end.min(self.next_slot + self.max_gap_slots);
            while self.next_slot < end {
                emit(&last, self.next_slot)?;
                self.next_slot += 1;
            }
        }
        Ok(self.next_slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stamps: &[i64], last_duration: i64) -> Vec<(i64, i64)> {
        // 25 fps output, time base 1/1000: one slot is 40 ticks.
        let mut cfr = ConstantRate::new(Rational::new(25, 1), Rational::new(1, 1000), None, 0, 100);
        let mut out = Vec::new();
        for &ts in stamps {
            cfr.push(ts, Some(ts), &mut |p: &i64, i| {
                out.push((*p, i));
                Ok(())
            })
            .expect("push");
        }
        cfr.finish(last_duration, &mut |p: &i64, i| {
            out.push((*p, i));
            Ok(())
        })
        .expect("finish");
        out
    }

    #[test]
    fn duplicates_into_gaps_and_drops_doubles() {
        // 0 fills slot 0; 120 is three slots later (0 repeats); 130 and
        // 135 land in slot 3, the later one wins.
        let out = run(&[0, 120, 130, 135], 40);
        assert_eq!(out, [(0, 0), (0, 1), (0, 2), (135, 3)]);
    }

    #[test]
    fn a_gap_past_the_limit_is_an_error() {
        let mut cfr = ConstantRate::new(Rational::new(25, 1), Rational::new(1, 1000), None, 0, 2);
        let mut emit = |_: &i64, _| Ok(());
        cfr.push(0, Some(0), &mut emit).expect("first");
        let err = cfr.push(1000, Some(1000), &mut emit).expect_err("gap");
        assert!(matches!(err, MediaError::Gap { .. }), "{err}");
    }
}
