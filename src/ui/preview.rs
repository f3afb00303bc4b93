//! The pre-join camera preview: what you would publish, shown small in the login window while
//! you choose devices. It closes when you join (your stream then opens the camera itself) and
//! is not opened for spectators.

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat};
use bevy_egui::egui;
use holoroom_engine::media::{ColorMatrix, VideoFrame};
use holoroom_engine::{LocalStream, StreamConfig, StreamError};

use crate::room::participants::{AppState, MediaChoice};

/// Size of the preview image, in pixels.
const SIZE: [usize; 2] = [192, 108];

/// The open preview and the choice it was opened with.
#[derive(Resource)]
pub struct Preview {
    /// The stream, once its camera opened (off the frame).
    local: Option<LocalStream>,
    opening: Option<crossbeam_channel::Receiver<Result<LocalStream, StreamError>>>,
    choice: MediaChoice,
    seen: u64,
    /// The microphone's level (RMS, smoothed, 0..1), for the meter on the login card.
    pub level: f32,
    /// The picture, as an image the overlay shows.
    image: Handle<Image>,
    texture: Option<egui::TextureId>,
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
        self.local.as_ref().and_then(LocalStream::note)
    }

    fn close(&self) {
        if let Some(local) = &self.local {
            local.destroy();
        }
    }

    /// Shows the picture (`texture` is the image's id in the overlay).
    pub fn show(&mut self, ui: &mut egui::Ui, texture: egui::TextureId) {
        self.texture = Some(texture);
        if self.seen == 0 {
            ui.label("Starting the camera…");
        } else {
            ui.image((texture, egui::vec2(SIZE[0] as f32, SIZE[1] as f32)));
        }
    }

    pub fn image(&self) -> &Handle<Image> {
        &self.image
    }

    pub fn texture(&self) -> Option<egui::TextureId> {
        self.texture
    }
}

/// Copies the newest preview frame into the preview image (only when a new one arrived).
pub fn update_preview(preview: Option<ResMut<Preview>>, mut images: ResMut<Assets<Image>>) {
    let Some(mut preview) = preview else { return };
    // The microphone's level from what it recorded since the last frame (nothing else reads a
    // preview's sound).
    if let Some(heard) = preview.local.as_ref().and_then(LocalStream::captured_audio) {
        let samples = heard.take(heard.len());
        if !samples.is_empty() {
            let rms = (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt();
            preview.level = rms.max(preview.level * 0.85);
        }
    }
    let Some(frame) = preview
        .local
        .as_ref()
        .and_then(|l| l.preview().newer_than(preview.seen))
    else {
        return;
    };
    preview.seen = frame.sequence;
    if let Some(mut image) = images.get_mut(&preview.image) {
        image.data = Some(small_rgba(&frame.frame));
    }
}

/// The frame scaled down to [`SIZE`] (nearest sample) as RGBA, with its size's colour matrix.
fn small_rgba(frame: &VideoFrame) -> Vec<u8> {
    let matrix = ColorMatrix::for_size(frame.width, frame.height);
    let mut rgb = Vec::with_capacity(SIZE[0] * SIZE[1] * 4);
    for row in 0..SIZE[1] {
        let y = row * frame.height as usize / SIZE[1];
        for col in 0..SIZE[0] {
            let x = col * frame.width as usize / SIZE[0];
            let at = (y / 2) * frame.uv_stride + x / 2;
            rgb.extend(matrix.to_rgb(frame.y[y * frame.y_stride + x], frame.u[at], frame.v[at]));
            rgb.push(255);
        }
    }
    rgb
}

/// Opens the preview on the login screen (again when the camera choice changes), closes it
/// otherwise.
pub fn keep_preview(
    mut commands: Commands,
    mut images: ResMut<Assets<Image>>,
    mut textures: ResMut<bevy_egui::EguiUserTextures>,
    state: Res<State<AppState>>,
    choice: Res<MediaChoice>,
    form: Option<Res<super::LoginForm>>,
    preview: Option<ResMut<Preview>>,
    bridge: Option<Res<crate::net::EngineBridge>>,
    mut failed: Local<Option<MediaChoice>>,
) {
    // Spectators publish nothing: no camera for them.
    let spectating = form.is_some_and(|f| f.spectate);
    let wanted = *state.get() == AppState::Login && !spectating;
    let current = preview.as_ref().is_some_and(|p| p.choice == *choice);
    let known_bad = failed.as_ref().is_some_and(|f| f == &*choice);
    if wanted && !current && !known_bad {
        let config = StreamConfig {
            video: choice.video.clone(),
            audio: choice.audio,
            microphone: choice.microphone.clone(),
            ..StreamConfig::test_pattern(640, 360, 15.0)
        };
        if let Some(old) = &preview {
            old.close();
            textures.remove_image(old.image());
        }
        let Some(bridge) = bridge else {
            return;
        };
        let image = images.add(Image::new_fill(
            Extent3d {
                width: SIZE[0] as u32,
                height: SIZE[1] as u32,
                depth_or_array_layers: 1,
            },
            TextureDimension::D2,
            &[0, 0, 0, 255],
            TextureFormat::Rgba8UnormSrgb,
            RenderAssetUsages::RENDER_WORLD | RenderAssetUsages::MAIN_WORLD,
        ));
        commands.insert_resource(Preview {
            local: None,
            opening: Some(bridge.engine.create_stream_later(config)),
            choice: choice.clone(),
            seen: 0,
            level: 0.0,
            image,
            texture: None,
        });
    } else if wanted && let Some(mut preview) = preview {
        // The camera opened (or not) off the frame.
        let opened = preview.opening.as_ref().and_then(|rx| rx.try_recv().ok());
        match opened {
            Some(Ok(local)) => {
                preview.local = Some(local);
                preview.opening = None;
            }
            Some(Err(err)) => {
                // Said once; tried again when the choice changes.
                warn!("no preview: {err}");
                *failed = Some(choice.clone());
                textures.remove_image(preview.image());
                commands.remove_resource::<Preview>();
            }
            None => {}
        }
    } else if !wanted && let Some(old) = preview {
        old.close();
        textures.remove_image(old.image());
        commands.remove_resource::<Preview>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn black_and_white_come_out_as_black_and_white() {
        let black = VideoFrame::black(640, 360).expect("frame");
        let rgba = small_rgba(&black);
        assert!(rgba.chunks(4).all(|p| p == [0, 0, 0, 255]));
        let mut white = black.clone();
        white.y.fill(235);
        let rgba = small_rgba(&white);
        assert_eq!(rgba.len(), SIZE[0] * SIZE[1] * 4);
        assert!(rgba.iter().all(|&c| c >= 254));
    }
}
