//! Sound cards: the room's output (the mixer played through cpal) and microphone capture.
//!
//! Each cpal stream lives on a thread of its own, which owns it until told to stop, so nothing
//! depends on whether a platform's stream may cross threads. Without a usable output device the
//! mixer is pulled by a paced null output instead: the room still mixes (levels, speaking
//! indicators) and says that nothing is heard. Without a microphone the caller sends silence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample};

use crate::media::{AudioBuffer, Mixer, SAMPLE_RATE};

/// Why a sound card could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioDeviceError {
    #[error("no {0} device found")]
    NoDevice(&'static str),
    #[error("no {kind} device named {name:?}")]
    UnknownDevice { kind: &'static str, name: String },
    #[error("can't open {device}: {reason}")]
    Open { device: String, reason: String },
    #[error("can't start the audio thread: {0}")]
    Thread(String),
}

/// alsa-lib says what it tried and could not do (no sound card, a plugin it could not load) on
/// the process's stderr, between the lines of the app's own log. On each thread that talks to
/// it, its reports are kept instead, and what `f` caused goes to the log at debug level; the
/// handler stays on the thread, so what alsa-lib says there later stays out of the terminal too
/// (and is dropped with the next call's fresh buffer).
#[cfg(target_os = "linux")]
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let reports = alsa::Output::local_error_handler().ok();
    let value = f();
    if let Some(reports) = reports {
        let text = reports.borrow().to_string();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            tracing::debug!(target: "alsa", "{line}");
        }
    }
    value
}

#[cfg(not(target_os = "linux"))]
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    f()
}

/// Names of the sound cards that can play.
pub fn output_devices() -> Vec<String> {
    quietly(|| {
        cpal::default_host()
            .output_devices()
            .map(|devices| devices.map(|d| d.to_string()).collect())
            .unwrap_or_default()
    })
}

/// Names of the sound cards that can record.
pub fn input_devices() -> Vec<String> {
    quietly(|| {
        cpal::default_host()
            .input_devices()
            .map(|devices| devices.map(|d| d.to_string()).collect())
            .unwrap_or_default()
    })
}

fn find_device(input: bool, name: Option<&str>) -> Result<cpal::Device, AudioDeviceError> {
    let host = cpal::default_host();
    let kind = if input { "input" } else { "output" };
    match name {
        None => if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        }
        .ok_or(AudioDeviceError::NoDevice(kind)),
        Some(name) => {
            let devices = if input {
                host.input_devices().map(|d| d.collect::<Vec<_>>())
            } else {
                host.output_devices().map(|d| d.collect::<Vec<_>>())
            };
            devices
                .unwrap_or_default()
                .into_iter()
                .find(|d| d.to_string() == name)
                .ok_or_else(|| AudioDeviceError::UnknownDevice {
                    kind,
                    name: name.to_owned(),
                })
        }
    }
}

/// The device's configuration at 48 kHz if it has one, else its default (resampled then).
fn pick_config(device: &cpal::Device, input: bool) -> Result<cpal::SupportedStreamConfig, String> {
    let ranges: Vec<_> = if input {
        device
            .supported_input_configs()
            .map(|c| c.collect())
            .unwrap_or_default()
    } else {
        device
            .supported_output_configs()
            .map(|c| c.collect())
            .unwrap_or_default()
    };
    let usable = |f: SampleFormat| matches!(f, SampleFormat::F32 | SampleFormat::I16 | SampleFormat::U16);
    if let Some(config) = ranges
        .into_iter()
        .filter(|r| usable(r.sample_format()) && r.channels() > 0)
        .find_map(|r| r.try_with_sample_rate(SAMPLE_RATE))
    {
        return Ok(config);
    }
    let default = if input {
        device.default_input_config()
    } else {
        device.default_output_config()
    };
    default.map_err(|e| e.to_string())
}

/// Where the room's sound goes.
#[derive(Debug)]
pub struct AudioOutput {
    mixer: Mixer,
    device: Option<String>,
    note: Option<String>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AudioOutput {
    /// Plays `mixer` on the named output device (the default one for `None`). Never fails: a
    /// device that is missing or will not open gives a paced null output and a note saying so.
    pub fn open(mixer: Mixer, device: Option<&str>) -> AudioOutput {
        let stop = Arc::new(AtomicBool::new(false));
        match open_device(mixer.clone(), device, stop.clone()) {
            Ok((name, thread)) => AudioOutput {
                mixer,
                device: Some(name),
                note: None,
                stop,
                thread: Some(thread),
            },
            Err(err) => {
                let note = format!("{err}; the room is mixed but not heard");
                tracing::warn!("{note}");
                // A flag of its own: the device's may already say stop.
                AudioOutput::silent(mixer, Some(note), Arc::new(AtomicBool::new(false)))
            }
        }
    }

    /// [`AudioOutput::open`] off the caller's thread (a device can take seconds to open): the
    /// output arrives on the returned channel.
    pub fn open_later(mixer: Mixer, device: Option<&str>) -> crossbeam_channel::Receiver<AudioOutput> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let device = device.map(str::to_owned);
        let opener = {
            let (mixer, tx) = (mixer.clone(), tx.clone());
            move || {
                let _ = tx.send(AudioOutput::open(mixer, device.as_deref()));
            }
        };
        if let Err(err) = std::thread::Builder::new().name("audio-open".into()).spawn(opener) {
            let note = format!("can't open the sound output ({err}); the room is mixed but not heard");
            let _ = tx.send(AudioOutput::silent(mixer, Some(note), Arc::new(AtomicBool::new(false))));
        }
        rx
    }

    /// A paced null output: `mixer` is pulled in real time and the sound goes nowhere.
    pub fn null(mixer: Mixer) -> AudioOutput {
        AudioOutput::silent(mixer, None, Arc::new(AtomicBool::new(false)))
    }

    fn silent(mixer: Mixer, note: Option<String>, stop: Arc<AtomicBool>) -> AudioOutput {
        let thread = {
            let (mixer, stop) = (mixer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("audio-null".into())
                .spawn(move || run_null(&mixer, &stop))
                .map_err(|e| tracing::error!(%e, "no audio thread: voices are not mixed"))
                .ok()
        };
        AudioOutput {
            mixer,
            device: None,
            note,
            stop,
            thread,
        }
    }

    pub fn mixer(&self) -> &Mixer {
        &self.mixer
    }

    /// The sound card playing the room, or None for the null output.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// Why nothing is heard, if nothing is.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
}

impl Drop for AudioOutput {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Pulls the mixer in 10 ms blocks at real-time pace.
fn run_null(mixer: &Mixer, stop: &AtomicBool) {
    const BLOCK: Duration = Duration::from_millis(10);
    let mut block = vec![0f32; 2 * SAMPLE_RATE as usize / 100];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        mixer.render(&mut block, 2);
        next += BLOCK;
        let now = Instant::now();
        if next > now {
            std::thread::park_timeout(next - now);
        } else {
            next = now; // fell behind (a stalled machine): do not burst to catch up
        }
    }
}

/// Opens the output device on a thread of its own; returns once the stream plays (or failed to).
fn open_device(
    mixer: Mixer,
    device: Option<&str>,
    stop: Arc<AtomicBool>,
) -> Result<(String, JoinHandle<()>), AudioDeviceError> {
    let build = move |device: &cpal::Device, config: &cpal::SupportedStreamConfig| build_output(device, config, mixer);
    stream_on_thread("audio-out", false, device, stop, build)
}

/// Opens an input or output stream on a thread of its own, which keeps it until `stop` is set.
/// Returns the device's name once the stream plays, or why it does not; a stream that has not
/// started within 5 s is given up (`stop` is set, so a late start ends at once).
fn stream_on_thread(
    thread_name: &str,
    input: bool,
    device: Option<&str>,
    stop: Arc<AtomicBool>,
    build: impl FnOnce(&cpal::Device, &cpal::SupportedStreamConfig) -> Result<cpal::Stream, String> + Send + 'static,
) -> Result<(String, JoinHandle<()>), AudioDeviceError> {
    let device = device.map(str::to_owned);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let give_up = stop.clone();
    let thread = std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            let stream = quietly(|| {
                find_device(input, device.as_deref()).and_then(|device| {
                    let name = device.to_string();
                    let open_error = |reason: String| AudioDeviceError::Open {
                        device: name.clone(),
                        reason,
                    };
                    let config = pick_config(&device, input).map_err(open_error)?;
                    let stream = build(&device, &config).map_err(open_error)?;
                    stream.play().map_err(|e| open_error(e.to_string()))?;
                    Ok((name, stream))
                })
            });
            match stream {
                Ok((name, stream)) => {
                    let _ = ready_tx.send(Ok(name));
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(Duration::from_millis(200));
                    }
                    drop(stream);
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                }
            }
        })
        .map_err(|e| AudioDeviceError::Thread(e.to_string()))?;
    match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(name)) => Ok((name, thread)),
        Ok(Err(err)) => {
            let _ = thread.join();
            Err(err)
        }
        Err(_) => {
            give_up.store(true, Ordering::Relaxed);
            Err(AudioDeviceError::Open {
                device: if input { "the microphone" } else { "the output device" }.into(),
                reason: "it did not start within 5 s".into(),
            })
        }
    }
}

fn build_output(
    device: &cpal::Device,
    config: &cpal::SupportedStreamConfig,
    mixer: Mixer,
) -> Result<cpal::Stream, String> {
    let format = config.sample_format();
    let config = config.config();
    match format {
        SampleFormat::F32 => output_stream::<f32>(device, config, mixer),
        SampleFormat::I16 => output_stream::<i16>(device, config, mixer),
        SampleFormat::U16 => output_stream::<u16>(device, config, mixer),
        other => Err(format!("sample format {other} is not supported")),
    }
}

fn output_stream<T: SizedSample + FromSample<f32>>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mixer: Mixer,
) -> Result<cpal::Stream, String> {
    let channels = usize::from(config.channels);
    let mut resampler = Resampler::new(SAMPLE_RATE, config.sample_rate, channels);
    device
        .build_output_stream::<T, _, _>(
            config,
            move |out: &mut [T], _| {
                let mixed = resampler.pull(out.len() / channels.max(1), |block| mixer.render(block, channels));
                for (out, sample) in out.iter_mut().zip(mixed) {
                    *out = T::from_sample(*sample);
                }
            },
            |err| tracing::warn!(%err, "audio output error"),
            Some(Duration::from_secs(2)),
        )
        .map_err(|e| e.to_string())
}

/// Linear-interpolation rate conversion of interleaved audio, pulled by the consumer.
#[derive(Debug)]
pub struct Resampler {
    /// Source frames per output frame.
    ratio: f64,
    channels: usize,
    /// Source frames fetched but not yet consumed (interleaved).
    source: Vec<f32>,
    /// Position of the next output frame within `source`, in source frames.
    position: f64,
    block: Vec<f32>,
    out: Vec<f32>,
}

impl Resampler {
    pub fn new(from_rate: u32, to_rate: u32, channels: usize) -> Resampler {
        Resampler {
            ratio: f64::from(from_rate) / f64::from(to_rate.max(1)),
            channels: channels.max(1),
            source: Vec::new(),
            position: 0.0,
            block: Vec::new(),
            out: Vec::new(),
        }
    }

    /// `frames` output frames, fetching source audio with `fill` (which overwrites a block of
    /// interleaved source frames) as needed.
    pub fn pull(&mut self, frames: usize, mut fill: impl FnMut(&mut [f32])) -> &[f32] {
        let c = self.channels;
        self.out.clear();
        if (self.ratio - 1.0).abs() < 1e-9 {
            self.out.resize(frames * c, 0.0);
            fill(&mut self.out);
            return &self.out;
        }
        for _ in 0..frames {
            let index = self.position.floor() as usize;
            while (index + 1) * c >= self.source.len() {
                self.block.resize(480 * c, 0.0);
                fill(&mut self.block);
                self.source.extend_from_slice(&self.block);
            }
            let t = (self.position - index as f64) as f32;
            for channel in 0..c {
                let a = self.source[index * c + channel];
                let b = self.source[(index + 1) * c + channel];
                self.out.push(a + (b - a) * t);
            }
            self.position += self.ratio;
        }
        let used = (self.position.floor() as usize).min(self.source.len() / c);
        self.source.drain(..used * c);
        self.position -= used as f64;
        &self.out
    }
}

impl Resampler {
    /// Converts `input` (interleaved source frames, as they arrive) and appends every output
    /// frame it completes to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let c = self.channels;
        if (self.ratio - 1.0).abs() < 1e-9 {
            out.extend_from_slice(input);
            return;
        }
        self.source.extend_from_slice(input);
        loop {
            let index = self.position.floor() as usize;
            if (index + 1) * c >= self.source.len() {
                break;
            }
            let t = (self.position - index as f64) as f32;
            for channel in 0..c {
                let a = self.source[index * c + channel];
                let b = self.source[(index + 1) * c + channel];
                out.push(a + (b - a) * t);
            }
            self.position += self.ratio;
        }
        let used = (self.position.floor() as usize).min(self.source.len() / c);
        self.source.drain(..used * c);
        self.position -= used as f64;
    }
}

/// A microphone being recorded into an [`AudioBuffer`] as 48 kHz mono.
#[derive(Debug)]
pub struct Microphone {
    device: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Microphone {
    /// Records the named input device (the default one for `None`) into `into`.
    pub fn open(device: Option<&str>, into: AudioBuffer) -> Result<Microphone, AudioDeviceError> {
        let stop = Arc::new(AtomicBool::new(false));
        let build =
            move |device: &cpal::Device, config: &cpal::SupportedStreamConfig| build_input(device, config, into);
        let (device, thread) = stream_on_thread("audio-in", true, device, stop.clone(), build)?;
        Ok(Microphone {
            device,
            stop,
            thread: Some(thread),
        })
    }

    /// The device being recorded.
    pub fn device(&self) -> &str {
        &self.device
    }
}

impl Drop for Microphone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn build_input(
    device: &cpal::Device,
    config: &cpal::SupportedStreamConfig,
    into: AudioBuffer,
) -> Result<cpal::Stream, String> {
    let format = config.sample_format();
    let config = config.config();
    match format {
        SampleFormat::F32 => input_stream::<f32>(device, config, into),
        SampleFormat::I16 => input_stream::<i16>(device, config, into),
        SampleFormat::U16 => input_stream::<u16>(device, config, into),
        other => Err(format!("sample format {other} is not supported")),
    }
}

fn input_stream<T: SizedSample>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    into: AudioBuffer,
) -> Result<cpal::Stream, String>
where
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels).max(1);
    let mut mono: Vec<f32> = Vec::new();
    let mut converted: Vec<f32> = Vec::new();
    let mut resampler = Resampler::new(config.sample_rate, SAMPLE_RATE, 1);
    device
        .build_input_stream::<T, _, _>(
            config,
            move |data: &[T], _| {
                mono.clear();
                mono.extend(data.chunks(channels).map(|frame| {
                    frame
                        .iter()
                        .map(|s| <f32 as FromSample<T>>::from_sample_(*s))
                        .sum::<f32>()
                        / frame.len() as f32
                }));
                converted.clear();
                resampler.push(&mono, &mut converted);
                into.push(&converted);
            },
            |err| tracing::warn!(%err, "microphone error"),
            Some(Duration::from_secs(2)),
        )
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Tone, dominant_frequency};

    #[test]
    fn resampling_keeps_the_pitch() {
        // 48 kHz tone played on a 44.1 kHz card.
        let mut tone = Tone::new(1000.0, 0.5);
        let mut source: Vec<f32> = Vec::new();
        let mut resampler = Resampler::new(48_000, 44_100, 1);
        let mut out = Vec::new();
        for _ in 0..50 {
            let block = resampler.pull(441, |block| {
                while source.len() < block.len() {
                    source.extend(tone.next_frame());
                }
                block.copy_from_slice(&source[..block.len()]);
                source.drain(..block.len());
            });
            out.extend_from_slice(block);
        }
        // Read back as if at 48 kHz, the pitch appears scaled by 48/44.1.
        let seen = dominant_frequency(&out, 100.0, 2000.0).expect("a tone");
        let expected = 1000.0 * 48_000.0 / 44_100.0;
        assert!((seen - expected).abs() < 10.0, "{seen} Hz, expected {expected}");
        assert_eq!(out.len(), 50 * 441);
    }

    #[test]
    fn a_44k_microphone_becomes_48k() {
        // 44.1 kHz capture arriving in uneven chunks.
        let mut resampler = Resampler::new(44_100, 48_000, 1);
        let step = std::f64::consts::TAU * 500.0 / 44_100.0;
        let input: Vec<f32> = (0..44_100).map(|i| ((i as f64 * step).sin() * 0.5) as f32).collect();
        let mut out = Vec::new();
        for chunk in input.chunks(333) {
            resampler.push(chunk, &mut out);
        }
        assert!(
            (out.len() as i64 - 48_000).abs() <= 2,
            "{} samples for one second",
            out.len()
        );
        let seen = dominant_frequency(&out, 100.0, 2000.0).expect("a tone");
        assert!((seen - 500.0).abs() < 5.0, "{seen} Hz");
    }

    #[test]
    fn equal_rates_pass_through() {
        let mut resampler = Resampler::new(48_000, 48_000, 2);
        let out = resampler.pull(4, |block| {
            for (i, s) in block.iter_mut().enumerate() {
                *s = i as f32;
            }
        });
        assert_eq!(out, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    }

    #[test]
    fn without_a_sound_card_the_room_is_still_mixed_in_real_time() {
        let mixer = Mixer::new();
        let output = AudioOutput::open(mixer.clone(), Some("no such card"));
        assert!(output.device().is_none());
        assert!(
            output.note().is_some_and(|n| n.contains("no such card")),
            "{:?}",
            output.note()
        );
        let start = mixer.rendered_frames();
        std::thread::sleep(Duration::from_millis(300));
        let rendered = mixer.rendered_frames() - start;
        // Paced: about 300 ms worth, not a spinning loop.
        assert!((4_800..=30_000).contains(&rendered), "{rendered} frames in 300 ms");
    }

    #[test]
    fn a_missing_microphone_is_a_clear_error() {
        let err = Microphone::open(Some("no such microphone"), AudioBuffer::default()).expect_err("no device");
        assert!(
            matches!(err, AudioDeviceError::UnknownDevice { kind: "input", .. }),
            "{err}"
        );
    }
}
