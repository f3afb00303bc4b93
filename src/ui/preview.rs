//! The pre-join camera preview: what you would publish, shown small in the login window while
//! you choose devices. It closes when you join (your stream then opens the camera itself) and
//! is not opened for spectators.

use bevy::prelude::*;
use bevy_egui::egui;
use holoroom_engine::media::VideoFrame;
use holoroom_engine::{AudioSource, LocalStream, StreamConfig};

use crate::room::participants::{AppState, MediaChoice};

/// Size of the preview image, in pixels.
const SIZE: [usize; 2] = [192, 108];

/// The open preview and the choice it was opened with.
#[derive(Resource)]
pub struct Preview {
    local: LocalStream,
    choice: MediaChoice,
    seen: u64,
    texture: Option<egui::TextureHandle>,
}

impl std::fmt::Debug for Preview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preview")
            .field("choice", &self.choice)
            .finish_non_exhaustive()
    }
}

impl Preview {
    /// Why the preview shows a stand-in, if it does.
    pub fn note(&self) -> Option<&str> {
        self.local.note()
    }

    /// Shows the newest frame (converting only when a new one arrived).
    pub fn show(&mut self, ui: &mut egui::Ui) {
        if let Some(frame) = self.local.preview().newer_than(self.seen) {
            self.seen = frame.sequence;
            let image = egui::ColorImage::from_rgb(SIZE, &small_rgb(&frame.frame));
            match &mut self.texture {
                Some(texture) => texture.set(image, egui::TextureOptions::LINEAR),
                None => {
                    self.texture = Some(ui.ctx().load_texture("preview", image, egui::TextureOptions::LINEAR));
                }
            }
        }
        match &self.texture {
            Some(texture) => {
                ui.image((texture.id(), egui::vec2(SIZE[0] as f32, SIZE[1] as f32)));
            }
            None => {
                ui.label("Starting the camera…");
            }
        }
    }
}

/// The frame scaled down to [`SIZE`] (nearest sample) as RGB, BT.601 limited range.
fn small_rgb(frame: &VideoFrame) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(SIZE[0] * SIZE[1] * 3);
    for row in 0..SIZE[1] {
        let y = row * frame.height as usize / SIZE[1];
        for col in 0..SIZE[0] {
            let x = col * frame.width as usize / SIZE[0];
            let luma = f32::from(frame.y[y * frame.y_stride + x]) - 16.0;
            let at = (y / 2) * frame.uv_stride + x / 2;
            let (u, v) = (f32::from(frame.u[at]) - 128.0, f32::from(frame.v[at]) - 128.0);
            let c = 1.164 * luma;
            rgb.extend([c + 1.596 * v, c - 0.392 * u - 0.813 * v, c + 2.017 * u].map(|x| x.clamp(0.0, 255.0) as u8));
        }
    }
    rgb
}

/// Opens the preview on the login screen (again when the camera choice changes), closes it
/// otherwise.
pub fn keep_preview(
    mut commands: Commands,
    state: Res<State<AppState>>,
    choice: Res<MediaChoice>,
    form: Option<Res<super::LoginForm>>,
    preview: Option<Res<Preview>>,
    mut failed: Local<Option<MediaChoice>>,
) {
    // Spectators publish nothing: no camera for them.
    let spectating = form.is_some_and(|f| f.spectate);
    let wanted = *state.get() == AppState::Login && !spectating;
    let current = preview.as_ref().is_some_and(|p| p.choice.video == choice.video);
    let known_bad = failed.as_ref().is_some_and(|f| f.video == choice.video);
    if wanted && !current && !known_bad {
        let config = StreamConfig {
            video: choice.video.clone(),
            audio: AudioSource::Off,
            ..StreamConfig::test_pattern(640, 360, 15.0)
        };
        if let Some(old) = &preview {
            old.local.destroy();
        }
        match LocalStream::create(config) {
            Ok(local) => commands.insert_resource(Preview {
                local,
                choice: choice.clone(),
                seen: 0,
                texture: None,
            }),
            Err(err) => {
                // Said once; tried again when the choice changes.
                warn!("no preview: {err}");
                *failed = Some(choice.clone());
                commands.remove_resource::<Preview>();
            }
        }
    } else if !wanted && let Some(old) = preview {
        old.local.destroy();
        commands.remove_resource::<Preview>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn black_and_white_come_out_as_black_and_white() {
        let black = VideoFrame::black(640, 360).expect("frame");
        assert!(small_rgb(&black).iter().all(|&c| c == 0));
        let mut white = black.clone();
        white.y.fill(235);
        let rgb = small_rgb(&white);
        assert_eq!(rgb.len(), SIZE[0] * SIZE[1] * 3);
        assert!(rgb.iter().all(|&c| c >= 254));
    }
}
