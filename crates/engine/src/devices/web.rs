//! Devices in a browser: the room's sound plays through Web Audio (a script processor pulls
//! the mixer); cameras and microphones are the browser's to choose (getUserMedia asks), so the
//! lists here are empty.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{AudioProcessingEvent, ScriptProcessorNode};

use crate::media::Mixer;
use crate::web::audio_context;

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

type Node = (ScriptProcessorNode, Closure<dyn FnMut(AudioProcessingEvent)>);

thread_local! {
    // The page's JS objects stay on its one thread; outputs refer to them by key.
    static NODES: RefCell<HashMap<u64, Node>> = RefCell::new(HashMap::new());
    static NEXT: Cell<u64> = const { Cell::new(1) };
}

/// Where the room's sound goes: the page's audio output.
#[derive(Debug)]
pub struct AudioOutput {
    mixer: Mixer,
    note: Option<String>,
    node: Option<u64>,
}

impl AudioOutput {
    /// Plays `mixer` through the page (the device choice is the browser's).
    pub fn open(mixer: Mixer, _device: Option<&str>) -> AudioOutput {
        match Self::start(&mixer) {
            Ok(node) => {
                let key = NEXT.with(|n| n.replace(n.get() + 1));
                NODES.with(|nodes| nodes.borrow_mut().insert(key, node));
                AudioOutput {
                    mixer,
                    note: None,
                    node: Some(key),
                }
            }
            Err(err) => AudioOutput {
                mixer,
                note: Some(format!("no sound output ({err}); the room is mixed but not heard")),
                node: None,
            },
        }
    }

    fn start(mixer: &Mixer) -> Result<Node, String> {
        let context = audio_context()?;
        let node = context
            .create_script_processor_with_buffer_size_and_number_of_input_channels_and_number_of_output_channels(
                1024, 1, 2,
            )
            .map_err(crate::web::describe)?;
        let mixer = mixer.clone();
        let mut mixed = Vec::new();
        let mut channel = Vec::new();
        let on_audio = Closure::<dyn FnMut(AudioProcessingEvent)>::new(move |event: AudioProcessingEvent| {
            let Ok(out) = event.output_buffer() else { return };
            let frames = out.length() as usize;
            mixed.resize(frames * 2, 0.0);
            mixer.render(&mut mixed, 2);
            for c in 0..2 {
                channel.clear();
                channel.extend(mixed.iter().skip(c).step_by(2));
                let _ = out.copy_to_channel(&channel, c as i32);
            }
        });
        node.set_onaudioprocess(Some(on_audio.as_ref().unchecked_ref()));
        node.connect_with_audio_node(&context.destination())
            .map_err(crate::web::describe)?;
        Ok((node, on_audio))
    }

    pub fn mixer(&self) -> &Mixer {
        &self.mixer
    }

    pub fn device(&self) -> Option<&str> {
        self.node.as_ref().map(|_| "the browser's output")
    }

    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
}

impl Drop for AudioOutput {
    fn drop(&mut self) {
        if let Some(key) = self.node.take()
            && let Some((node, _)) = NODES.with(|nodes| nodes.borrow_mut().remove(&key))
        {
            node.set_onaudioprocess(None);
            let _ = node.disconnect();
        }
    }
}
