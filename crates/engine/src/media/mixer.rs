//! Spatial mixing: every played stream's mono PCM into one stereo output, each voice panned
//! and attenuated by where its speaker is relative to the listener.
//!
//! The mixer is shared between whoever places the voices (the app, once a frame, with one
//! [`Mixer::sync`]) and whoever pulls the output (a sound card callback, or a paced null
//! output when there is none), each taking the mixer's lock once. Gains ramp across each
//! rendered block, so moving speakers do not click.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AudioBuffer, SAMPLE_RATE};

/// Distance up to which a voice plays at full level, in metres.
pub const REFERENCE_DISTANCE: f32 = 1.5;
/// How fast voices fade beyond [`REFERENCE_DISTANCE`] (inverse-distance rolloff).
pub const ROLLOFF: f32 = 1.0;
/// The quietest a distant voice gets, so nobody in the room is inaudible.
pub const MIN_DISTANCE_GAIN: f32 = 0.1;
/// Audio a voice buffers before it starts (or restarts after running dry): absorbs jitter.
pub const PRIME_SAMPLES: usize = SAMPLE_RATE as usize / 25;
/// Audio beyond this is late: the oldest goes, so a voice never lags far behind its video.
pub const MAX_QUEUED_SAMPLES: usize = SAMPLE_RATE as usize / 5;

/// Left and right gains of one voice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gains {
    pub left: f32,
    pub right: f32,
}

impl Gains {
    /// Both ears, full level.
    pub const CENTRE: Gains = Gains {
        left: std::f32::consts::FRAC_1_SQRT_2,
        right: std::f32::consts::FRAC_1_SQRT_2,
    };
    pub const SILENT: Gains = Gains { left: 0.0, right: 0.0 };
}

/// Gains for a speaker at `source`, heard by a listener at `listener` whose right hand points
/// along `right` (a unit vector). Equal-power panning by the speaker's side, inverse-distance
/// attenuation beyond [`REFERENCE_DISTANCE`].
pub fn spatial_gains(listener: [f32; 3], right: [f32; 3], source: [f32; 3]) -> Gains {
    let offset = [
        source[0] - listener[0],
        source[1] - listener[1],
        source[2] - listener[2],
    ];
    let distance = offset.iter().map(|v| v * v).sum::<f32>().sqrt();
    if !distance.is_finite() {
        return Gains::SILENT;
    }
    // -1 fully left .. 1 fully right; a speaker on top of the listener is centred.
    let side = if distance > 1e-3 {
        (offset.iter().zip(right).map(|(o, r)| o * r).sum::<f32>() / distance).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let angle = (side + 1.0) * std::f32::consts::FRAC_PI_4;
    let attenuation = if distance <= REFERENCE_DISTANCE {
        1.0
    } else {
        (REFERENCE_DISTANCE / (REFERENCE_DISTANCE + ROLLOFF * (distance - REFERENCE_DISTANCE))).max(MIN_DISTANCE_GAIN)
    };
    Gains {
        left: angle.cos() * attenuation,
        right: angle.sin() * attenuation,
    }
}

#[derive(Debug)]
struct Voice {
    buffer: AudioBuffer,
    target: Gains,
    current: Gains,
    muted: bool,
    /// Waiting for [`PRIME_SAMPLES`] before playing.
    priming: bool,
    /// Smoothed RMS of what the voice carries (before muting).
    level: f32,
}

impl Voice {
    fn new(buffer: AudioBuffer, gains: Gains) -> Voice {
        Voice {
            buffer,
            target: gains,
            current: gains,
            muted: false,
            priming: true,
            level: 0.0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    voices: HashMap<String, Voice>,
    scratch: Vec<f32>,
    /// RMS of the last rendered block, per output channel (first two).
    output_level: [f32; 2],
    rendered_frames: u64,
}

/// Where one voice is heard from this frame, for [`Mixer::sync`]. Kept by the caller from
/// frame to frame, so a steady room allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub key: String,
    /// The voice's audio; another buffer than the voice had (a stream replaced under the same
    /// key) starts the voice afresh.
    pub buffer: AudioBuffer,
    pub gains: Gains,
    pub muted: bool,
    /// Filled by [`Mixer::sync`]: how loud the voice is (smoothed RMS, 0..1), muted or not.
    pub level: f32,
}

impl Default for Gains {
    fn default() -> Self {
        Gains::CENTRE
    }
}

/// The room's mixer. Cheap to clone; clones share the voices.
#[derive(Debug, Clone, Default)]
pub struct Mixer {
    state: Arc<Mutex<State>>,
}

impl Mixer {
    pub fn new() -> Mixer {
        Mixer::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds (or replaces) the voice `key`, reading decoded audio from `buffer`. It starts centred.
    pub fn add(&self, key: &str, buffer: AudioBuffer) {
        self.lock()
            .voices
            .insert(key.to_owned(), Voice::new(buffer, Gains::CENTRE));
    }

    /// Makes the voices exactly `placements`, under one lock: adds the new ones (and starts
    /// afresh those whose buffer changed), places and mutes each, removes the voices not
    /// listed, and writes each voice's level back into its placement. A voice added here
    /// starts where it is placed.
    pub fn sync(&self, placements: &mut [Placement]) {
        let mut state = self.lock();
        state.voices.retain(|key, _| placements.iter().any(|p| p.key == *key));
        for placement in placements.iter_mut() {
            let voice = match state.voices.get_mut(placement.key.as_str()) {
                Some(voice) if voice.buffer.same_as(&placement.buffer) => voice,
                _ => {
                    // It starts where (and as muted as) it is placed, without a ramp.
                    let start = if placement.muted {
                        Gains::SILENT
                    } else {
                        placement.gains
                    };
                    let voice = Voice::new(placement.buffer.clone(), start);
                    state.voices.insert(placement.key.clone(), voice);
                    match state.voices.get_mut(placement.key.as_str()) {
                        Some(voice) => voice,
                        None => continue,
                    }
                }
            };
            voice.target = placement.gains;
            voice.muted = placement.muted;
            placement.level = voice.level;
        }
    }

    pub fn remove(&self, key: &str) {
        self.lock().voices.remove(key);
    }

    /// Voices being mixed.
    pub fn keys(&self) -> Vec<String> {
        self.lock().voices.keys().cloned().collect()
    }

    /// Where the voice `key` is heard from; the gains ramp there during the next block.
    pub fn place(&self, key: &str, gains: Gains) {
        if let Some(voice) = self.lock().voices.get_mut(key) {
            voice.target = gains;
        }
    }

    /// Silences (or restores) the voice `key` for this listener only.
    pub fn set_muted(&self, key: &str, muted: bool) {
        if let Some(voice) = self.lock().voices.get_mut(key) {
            voice.muted = muted;
        }
    }

    /// How loud the voice `key` is (smoothed RMS, 0..1), muted or not: a speaking indicator.
    pub fn level(&self, key: &str) -> Option<f32> {
        self.lock().voices.get(key).map(|v| v.level)
    }

    /// RMS of the last rendered block on the left and right channels.
    pub fn output_level(&self) -> [f32; 2] {
        self.lock().output_level
    }

    /// Frames rendered so far (one frame = one sample per channel).
    pub fn rendered_frames(&self) -> u64 {
        self.lock().rendered_frames
    }

    /// Mixes the next `out.len() / channels` frames into `out` (interleaved, overwritten).
    /// Channels beyond the first two get silence; one channel gets both ears summed.
    pub fn render(&self, out: &mut [f32], channels: usize) {
        out.fill(0.0);
        if channels == 0 {
            return;
        }
        let frames = out.len() / channels;
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut scratch = std::mem::take(&mut state.scratch);
        for voice in state.voices.values_mut() {
            let queued = voice.buffer.len();
            if queued > MAX_QUEUED_SAMPLES {
                voice.buffer.skip(queued - MAX_QUEUED_SAMPLES / 2);
            }
            if voice.priming {
                if voice.buffer.len() < PRIME_SAMPLES {
                    voice.level *= 0.9;
                    continue;
                }
                voice.priming = false;
            }
            scratch.clear();
            voice.buffer.take_into(frames, &mut scratch);
            if scratch.len() < frames {
                // Ran dry: play what there is, then prime again.
                voice.priming = true;
            }
            let power = scratch.iter().map(|s| s * s).sum::<f32>() / frames.max(1) as f32;
            let rms = power.sqrt();
            voice.level = if rms > voice.level {
                rms
            } else {
                voice.level * 0.85 + rms * 0.15
            };
            let target = if voice.muted { Gains::SILENT } else { voice.target };
            let from = voice.current;
            let step = 1.0 / frames.max(1) as f32;
            for (i, sample) in scratch.iter().enumerate() {
                let t = (i + 1) as f32 * step;
                let left = from.left + (target.left - from.left) * t;
                let right = from.right + (target.right - from.right) * t;
                let frame = &mut out[i * channels..(i + 1) * channels];
                if channels == 1 {
                    frame[0] += sample * (left + right) * std::f32::consts::FRAC_1_SQRT_2;
                } else {
                    frame[0] += sample * left;
                    frame[1] += sample * right;
                }
            }
            voice.current = target;
        }
        state.scratch = scratch;
        for sample in out.iter_mut() {
            *sample = sample.clamp(-1.0, 1.0);
        }
        let mut level = [0.0f32; 2];
        for (channel, slot) in level.iter_mut().enumerate().take(channels.min(2)) {
            let power = out.iter().skip(channel).step_by(channels).map(|s| s * s).sum::<f32>();
            *slot = (power / frames.max(1) as f32).sqrt();
        }
        if channels == 1 {
            level[1] = level[0];
        }
        state.output_level = level;
        state.rendered_frames += frames as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Tone;

    const LISTENER: [f32; 3] = [0.0, 1.2, 0.0];
    const RIGHT: [f32; 3] = [1.0, 0.0, 0.0];

    #[test]
    fn a_speaker_on_the_right_is_louder_on_the_right() {
        let gains = spatial_gains(LISTENER, RIGHT, [1.0, 1.2, 0.0]);
        assert!(gains.right > 0.99 && gains.left < 0.01, "{gains:?}");
        let gains = spatial_gains(LISTENER, RIGHT, [-1.0, 1.2, -0.5]);
        assert!(gains.left > gains.right * 2.0, "{gains:?}");
    }

    #[test]
    fn straight_ahead_is_centred_at_equal_power() {
        let gains = spatial_gains(LISTENER, RIGHT, [0.0, 1.2, -1.0]);
        assert!((gains.left - gains.right).abs() < 1e-5);
        assert!((gains.left.powi(2) + gains.right.powi(2) - 1.0).abs() < 1e-4);
    }

    #[test]
    fn distance_attenuates_down_to_a_floor() {
        let loudness = |d: f32| {
            let g = spatial_gains(LISTENER, RIGHT, [0.0, 1.2, -d]);
            (g.left.powi(2) + g.right.powi(2)).sqrt()
        };
        assert!((loudness(1.0) - 1.0).abs() < 1e-4);
        assert!(loudness(3.0) < loudness(2.0) && loudness(2.0) < loudness(1.6));
        assert!((loudness(1000.0) - MIN_DISTANCE_GAIN).abs() < 1e-4);
        assert_eq!(spatial_gains(LISTENER, RIGHT, [f32::NAN, 0.0, 0.0]), Gains::SILENT);
    }

    fn fed(mixer: &Mixer, key: &str, frequency: f64, ms: usize) -> AudioBuffer {
        let buffer = AudioBuffer::default();
        let mut tone = Tone::new(frequency, 0.5);
        for _ in 0..ms / 20 {
            buffer.push(&tone.next_frame());
        }
        mixer.add(key, buffer.clone());
        buffer
    }

    #[test]
    fn voices_are_panned_muted_and_metered() {
        let mixer = Mixer::new();
        fed(&mixer, "left", 440.0, 400);
        mixer.place("left", Gains { left: 1.0, right: 0.0 });
        let mut out = vec![0.0; 2 * 480];
        mixer.render(&mut out, 2); // ramps from centre
        mixer.render(&mut out, 2);
        let [l, r] = mixer.output_level();
        assert!(l > 0.3 && r < 1e-6, "left {l} right {r}");
        assert!(mixer.level("left").is_some_and(|v| v > 0.3));

        mixer.set_muted("left", true);
        mixer.render(&mut out, 2);
        mixer.render(&mut out, 2);
        assert!(out.iter().all(|s| *s == 0.0), "muted means silent");
        assert!(
            mixer.level("left").is_some_and(|v| v > 0.3),
            "a muted voice still shows speaking"
        );
    }

    #[test]
    fn a_voice_waits_to_prime_and_late_audio_is_dropped() {
        let mixer = Mixer::new();
        let buffer = fed(&mixer, "v", 300.0, 20);
        let mut out = vec![0.0; 2 * 480];
        mixer.render(&mut out, 2);
        assert!(out.iter().all(|s| *s == 0.0), "20 ms is not enough to start");
        assert_eq!(buffer.len(), 960, "and nothing was consumed");

        let mut tone = Tone::new(300.0, 0.5);
        for _ in 0..20 {
            buffer.push(&tone.next_frame());
        }
        mixer.render(&mut out, 2);
        assert!(out.iter().any(|s| *s != 0.0));
        assert!(buffer.len() <= MAX_QUEUED_SAMPLES, "{} queued", buffer.len());
    }

    #[test]
    fn one_sync_adds_places_mutes_replaces_and_removes_voices() {
        let mixer = Mixer::new();
        let buffer = |ms| {
            let buffer = AudioBuffer::default();
            let mut tone = Tone::new(440.0, 0.5);
            for _ in 0..ms / 20 {
                buffer.push(&tone.next_frame());
            }
            buffer
        };
        let place = |key: &str, gains, muted| Placement {
            key: key.into(),
            buffer: buffer(400),
            gains,
            muted,
            level: 0.0,
        };
        let left = Gains { left: 1.0, right: 0.0 };
        let mut placements = vec![place("a", left, false), place("b", Gains::CENTRE, true)];
        mixer.sync(&mut placements);
        let mut keys = mixer.keys();
        keys.sort();
        assert_eq!(keys, ["a", "b"]);
        let mut out = vec![0.0; 2 * 480];
        mixer.render(&mut out, 2);
        let [l, r] = mixer.output_level();
        assert!(l > 0.3 && r < 1e-6, "a starts where it is placed, b is muted: {l} {r}");
        mixer.sync(&mut placements);
        assert!(
            placements.iter().all(|p| p.level > 0.3),
            "levels come back, muted or not"
        );

        // b goes; a comes with a fresh (empty) buffer and primes again.
        placements.truncate(1);
        placements[0].buffer = AudioBuffer::default();
        mixer.sync(&mut placements);
        assert_eq!(mixer.keys(), ["a"]);
        mixer.render(&mut out, 2);
        assert!(out.iter().all(|s| *s == 0.0), "the new buffer has nothing yet");
    }

    #[test]
    fn mono_and_multichannel_outputs_are_filled_sensibly() {
        let mixer = Mixer::new();
        fed(&mixer, "v", 440.0, 200);
        let mut mono = vec![0.0; 480];
        mixer.render(&mut mono, 1);
        assert!(mono.iter().any(|s| *s != 0.0));
        let mut six = vec![0.0; 6 * 480];
        mixer.render(&mut six, 6);
        assert!(six.chunks(6).all(|f| f[2..].iter().all(|s| *s == 0.0)));
        assert!(six.chunks(6).any(|f| f[0] != 0.0));
        mixer.render(&mut [], 0);
    }
}
