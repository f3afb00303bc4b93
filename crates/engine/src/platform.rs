//! The one place that picks the backend for the platform being built: everything else in
//! the engine's neutral layer names these, never a backend.

#[cfg(not(target_arch = "wasm32"))]
pub use crate::native::Signaling;
#[cfg(not(target_arch = "wasm32"))]
pub use crate::native::check_system_requirements;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::native::{Backend, Devices, pace};

#[cfg(target_arch = "wasm32")]
pub use crate::web::Signaling;
#[cfg(target_arch = "wasm32")]
pub use crate::web::check_system_requirements;
#[cfg(target_arch = "wasm32")]
pub(crate) use crate::web::{Backend, Devices, pace};
