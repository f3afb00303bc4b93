//! Sound in and out of the page through AudioWorklet processors on the browser's audio
//! thread. Taps copy a played stream's sound, in blocks, to the app's audio buffer; the
//! output plays the room's mix, which the page renders a little ahead (by the audio clock)
//! and hands to the processor, so a busy page thread does not make the sound stutter.

use std::cell::RefCell;
use std::time::Duration;

use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AudioContext, AudioWorkletNode, AudioWorkletNodeOptions, MediaStream, MessageEvent};

use super::media::audio_context;
use super::util::{Interval, describe, hidden_element};
use crate::media::{AudioBuffer, Mixer, SAMPLE_RATE};

/// The processors, loaded into the page's audio context once.
const PROCESSORS: &str = r#"
class HoloroomTap extends AudioWorkletProcessor {
  constructor() { super(); this.block = new Float32Array(1024); this.filled = 0; }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    let at = 0;
    while (at < channel.length) {
      const n = Math.min(channel.length - at, this.block.length - this.filled);
      this.block.set(channel.subarray(at, at + n), this.filled);
      this.filled += n; at += n;
      if (this.filled === this.block.length) {
        this.port.postMessage(this.block, [this.block.buffer]);
        this.block = new Float32Array(1024); this.filled = 0;
      }
    }
    return true;
  }
}
class HoloroomPlay extends AudioWorkletProcessor {
  constructor() {
    super(); this.queue = []; this.offset = 0;
    this.port.onmessage = (event) => this.queue.push(event.data);
  }
  process(inputs, outputs) {
    const left = outputs[0][0], right = outputs[0][1] || outputs[0][0];
    for (let i = 0; i < left.length; i++) {
      while (this.queue.length && this.offset * 2 >= this.queue[0].length) { this.queue.shift(); this.offset = 0; }
      if (!this.queue.length) { left[i] = 0; right[i] = 0; continue; }
      const chunk = this.queue[0];
      left[i] = chunk[this.offset * 2]; right[i] = chunk[this.offset * 2 + 1]; this.offset++;
    }
    return true;
  }
}
registerProcessor('holoroom-tap', HoloroomTap);
registerProcessor('holoroom-play', HoloroomPlay);
"#;

thread_local! {
    static LOADED: RefCell<Option<js_sys::Promise>> = const { RefCell::new(None) };
}

/// The page's audio context with the processors loaded.
async fn context() -> Result<AudioContext, String> {
    let context = audio_context()?;
    let loading = LOADED.with(|loaded| -> Result<js_sys::Promise, String> {
        if let Some(promise) = loaded.borrow().as_ref() {
            return Ok(promise.clone());
        }
        let parts = js_sys::Array::of1(&PROCESSORS.into());
        let options = web_sys::BlobPropertyBag::new();
        options.set_type("text/javascript");
        let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).map_err(describe)?;
        let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(describe)?;
        let promise = context
            .audio_worklet()
            .map_err(describe)?
            .add_module(&url)
            .map_err(describe)?;
        *loaded.borrow_mut() = Some(promise.clone());
        Ok(promise)
    })?;
    JsFuture::from(loading)
        .await
        .map_err(|e| format!("the audio processors did not load: {}", describe(e)))?;
    Ok(context)
}

/// Copies a stream's sound, as 48 kHz mono, into an audio buffer (silently: the app's mixer
/// plays it, placed in the room).
pub(crate) struct AudioTap {
    node: AudioWorkletNode,
    /// Chromium feeds a remote WebRTC track to Web Audio only while a media element plays it
    /// too: a muted, hidden one.
    element: Option<web_sys::HtmlAudioElement>,
    _on_block: Closure<dyn FnMut(MessageEvent)>,
}

impl AudioTap {
    pub async fn new(stream: &MediaStream, into: AudioBuffer) -> Result<AudioTap, String> {
        let context = context().await?;
        let source = context.create_media_stream_source(stream).map_err(describe)?;
        let options = AudioWorkletNodeOptions::new();
        options.set_number_of_inputs(1);
        options.set_number_of_outputs(1);
        let node = AudioWorkletNode::new_with_options(&context, "holoroom-tap", &options).map_err(describe)?;
        let on_block = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let samples = js_sys::Float32Array::new(&event.data()).to_vec();
            into.push(&samples);
        });
        node.port()
            .map_err(describe)?
            .set_onmessage(Some(on_block.as_ref().unchecked_ref()));
        // The graph runs a node only while it leads somewhere: a silent path to the speakers.
        let silent = context.create_gain().map_err(describe)?;
        silent.gain().set_value(0.0);
        source.connect_with_audio_node(&node).map_err(describe)?;
        node.connect_with_audio_node(&silent).map_err(describe)?;
        silent
            .connect_with_audio_node(&context.destination())
            .map_err(describe)?;
        let element: Option<web_sys::HtmlAudioElement> = hidden_element("audio");
        if let Some(element) = &element {
            element.set_muted(true);
            element.set_src_object(Some(stream));
            if let Ok(started) = element.play() {
                let ignore = Closure::<dyn FnMut(wasm_bindgen::JsValue)>::new(|_| {});
                let _ = started.catch(&ignore);
                ignore.forget();
            }
        }
        Ok(AudioTap {
            node,
            element,
            _on_block: on_block,
        })
    }
}

impl Drop for AudioTap {
    fn drop(&mut self) {
        if let Ok(port) = self.node.port() {
            port.set_onmessage(None);
        }
        let _ = self.node.disconnect();
        if let Some(element) = self.element.take() {
            element.set_src_object(None);
            element.remove();
        }
    }
}

/// How far ahead of the audio clock the page renders the mix.
const AHEAD: Duration = Duration::from_millis(60);
/// How often the page renders.
const TICK: Duration = Duration::from_millis(20);

/// The room's mix playing through the page's output.
pub(crate) struct MixOutput {
    node: AudioWorkletNode,
    _tick: Interval,
}

impl MixOutput {
    pub async fn start(mixer: Mixer) -> Result<MixOutput, String> {
        let context = context().await?;
        let options = AudioWorkletNodeOptions::new();
        options.set_number_of_inputs(0);
        options.set_number_of_outputs(1);
        options.set_output_channel_count(&js_sys::Array::of1(&2.into()));
        let node = AudioWorkletNode::new_with_options(&context, "holoroom-play", &options).map_err(describe)?;
        node.connect_with_audio_node(&context.destination()).map_err(describe)?;
        let port = node.port().map_err(describe)?;
        let rate = f64::from(SAMPLE_RATE);
        let mut rendered: Option<u64> = None;
        let mut mixed = Vec::new();
        let tick = {
            let context = context.clone();
            Interval::start(TICK, move || {
                // The audio clock says how much has played; keep the mix a little ahead of it.
                let played = (context.current_time() * rate) as u64;
                let wanted = played + (AHEAD.as_secs_f64() * rate) as u64;
                // After a stall (a hidden page's timers) the clock ran on in silence: catch up,
                // without queueing what was missed.
                let done = rendered.unwrap_or(played).max(played);
                if wanted <= done {
                    return;
                }
                let frames = (wanted - done) as usize;
                mixed.resize(frames * 2, 0.0);
                mixer.render(&mut mixed, 2);
                let block = js_sys::Float32Array::from(mixed.as_slice());
                let _ = port.post_message_with_transferable(&block, &js_sys::Array::of1(&block.buffer()));
                rendered = Some(wanted);
            })?
        };
        Ok(MixOutput { node, _tick: tick })
    }
}

impl Drop for MixOutput {
    fn drop(&mut self) {
        let _ = self.node.disconnect();
    }
}
