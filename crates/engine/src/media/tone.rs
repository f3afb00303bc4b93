//! Synthetic audio: a sine tone, and a frequency estimator that finds it again in received PCM.

use std::f64::consts::TAU;

/// Samples per second of all Holoroom audio.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per 20 ms frame (one Opus packet).
pub const FRAME_SAMPLES: usize = 960;

/// A continuous sine tone, mono, in 20 ms frames.
#[derive(Debug, Clone)]
pub struct Tone {
    frequency: f64,
    amplitude: f32,
    phase: f64,
}

impl Tone {
    pub fn new(frequency: f64, amplitude: f32) -> Tone {
        Tone {
            frequency,
            amplitude: amplitude.clamp(0.0, 1.0),
            phase: 0.0,
        }
    }

    /// The next 20 ms of samples in [-1, 1].
    pub fn next_frame(&mut self) -> Vec<f32> {
        let step = TAU * self.frequency / f64::from(SAMPLE_RATE);
        (0..FRAME_SAMPLES)
            .map(|_| {
                let sample = self.phase.sin() as f32 * self.amplitude;
                self.phase = (self.phase + step) % TAU;
                sample
            })
            .collect()
    }
}

/// Power of `samples` at `frequency` (Goertzel).
fn power_at(samples: &[f32], frequency: f64) -> f64 {
    let coeff = 2.0 * (TAU * frequency / f64::from(SAMPLE_RATE)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The strongest frequency between `low` and `high` Hz, to 0.5 Hz, or None for silence.
pub fn dominant_frequency(samples: &[f32], low: f64, high: f64) -> Option<f64> {
    let energy: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if samples.is_empty() || energy / (samples.len() as f64) < 1e-6 {
        return None;
    }
    let mut best = (low, 0.0);
    let mut f = low;
    while f <= high {
        let p = power_at(samples, f);
        if p > best.1 {
            best = (f, p);
        }
        f += 0.5;
    }
    Some(best.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_found_at_its_frequency() {
        let mut tone = Tone::new(440.0, 0.5);
        let samples: Vec<f32> = (0..25).flat_map(|_| tone.next_frame()).collect();
        let found = dominant_frequency(&samples, 300.0, 600.0).expect("not silence");
        assert!((found - 440.0).abs() <= 1.0, "{found}");
    }

    #[test]
    fn silence_has_no_frequency() {
        assert_eq!(dominant_frequency(&[0.0; 4800], 300.0, 600.0), None);
    }
}
