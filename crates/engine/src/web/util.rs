//! Small browser helpers: timers as futures, the page's objects, awaiting promises.

use std::time::Duration;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The page's window; every call here runs in a page.
pub(crate) fn window() -> Option<web_sys::Window> {
    web_sys::window()
}

/// Resolves after `duration` (a `setTimeout`).
pub(crate) async fn sleep(duration: Duration) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Some(window) = window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(
                &resolve,
                duration.as_millis().min(i32::MAX as u128) as i32,
            );
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// Awaits a promise, turning a rejection into readable text.
pub(crate) async fn resolve(promise: js_sys::Promise) -> Result<JsValue, String> {
    JsFuture::from(promise).await.map_err(describe)
}

/// A JS error or value as text.
pub(crate) fn describe(value: JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// A hidden element of `tag` added to the page's body.
pub(crate) fn hidden_element<T: JsCast>(tag: &str) -> Option<T> {
    let document = window()?.document()?;
    let element = document.create_element(tag).ok()?;
    let _ = element.set_attribute("style", "display:none");
    document.body()?.append_child(&element).ok()?;
    element.dyn_into::<T>().ok()
}

/// A page timer calling `tick` every `period` (a `setInterval`) until dropped.
pub(crate) struct Interval {
    handle: i32,
    _tick: wasm_bindgen::closure::Closure<dyn FnMut()>,
}

impl Interval {
    pub fn start(period: Duration, tick: impl FnMut() + 'static) -> Result<Interval, String> {
        let tick = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(tick);
        let handle = window()
            .ok_or("no page")?
            .set_interval_with_callback_and_timeout_and_arguments_0(
                tick.as_ref().unchecked_ref(),
                period.as_millis().clamp(1, i32::MAX as u128) as i32,
            )
            .map_err(describe)?;
        Ok(Interval { handle, _tick: tick })
    }
}

impl Drop for Interval {
    fn drop(&mut self) {
        if let Some(window) = window() {
            window.clear_interval_with_handle(self.handle);
        }
    }
}
