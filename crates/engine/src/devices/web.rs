//! Devices in a browser: the room's sound plays through Web Audio (an AudioWorklet processor
//! plays the mix the page renders ahead); cameras and microphones are the browser's to choose
//! (getUserMedia asks), so the lists here are empty.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::media::Mixer;
use crate::web::MixOutput;

/// A camera this machine has (the browser does not list them before permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    pub index: u32,
    pub name: String,
}

pub fn cameras() -> Vec<CameraInfo> {
    Vec::new()
}

pub fn input_devices() -> Vec<String> {
    Vec::new()
}

pub fn output_devices() -> Vec<String> {
    Vec::new()
}

thread_local! {
    // The page's JS objects stay on its one thread; outputs refer to them by key.
    static OUTPUTS: RefCell<HashMap<u64, MixOutput>> = RefCell::new(HashMap::new());
    static NEXT: Cell<u64> = const { Cell::new(1) };
}

/// Where the room's sound goes: the page's audio output.
#[derive(Debug)]
pub struct AudioOutput {
    mixer: Mixer,
    note: Option<String>,
    key: u64,
}

impl AudioOutput {
    /// Plays `mixer` through the page (the device choice is the browser's). The output starts
    /// once the page's audio processors have loaded; until then the room is mixed unheard.
    pub fn open(mixer: Mixer, _device: Option<&str>) -> AudioOutput {
        let key = NEXT.with(|n| n.replace(n.get() + 1));
        let playing = mixer.clone();
        wasm_bindgen_futures::spawn_local(async move {
            match MixOutput::start(playing).await {
                // Dropped meanwhile: the output is not wanted any more.
                Ok(output) if OPEN.with(|open| open.borrow().contains(&key)) => {
                    OUTPUTS.with(|outputs| outputs.borrow_mut().insert(key, output));
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "no sound output; the room is mixed but not heard"),
            }
        });
        OPEN.with(|open| open.borrow_mut().insert(key));
        AudioOutput { mixer, note: None, key }
    }

    /// The same as [`AudioOutput::open`] (which does not block in a browser), on a channel.
    pub fn open_later(mixer: Mixer, device: Option<&str>) -> crossbeam_channel::Receiver<AudioOutput> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = tx.send(AudioOutput::open(mixer, device));
        rx
    }

    pub fn mixer(&self) -> &Mixer {
        &self.mixer
    }

    pub fn device(&self) -> Option<&str> {
        Some("the browser's output")
    }

    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
}

thread_local! {
    static OPEN: RefCell<std::collections::HashSet<u64>> = RefCell::new(std::collections::HashSet::new());
}

impl Drop for AudioOutput {
    fn drop(&mut self) {
        OPEN.with(|open| open.borrow_mut().remove(&self.key));
        OUTPUTS.with(|outputs| outputs.borrow_mut().remove(&self.key));
    }
}
