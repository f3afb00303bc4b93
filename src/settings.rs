//! What the app remembers between runs: the last room, name and devices (not the user ID:
//! two windows on one machine must not join as the same user). A JSON file in
//! the platform's config directory on the desktop (`$XDG_CONFIG_HOME/holoroom/settings.json`,
//! `~/.config/...` without it; `HOLOROOM_CONFIG_DIR` overrides), the page's local storage in a
//! browser. Saved when someone joins; a missing or unreadable store means defaults.

use serde::{Deserialize, Serialize};

/// The remembered choices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub room: Option<String>,
    pub name: Option<String>,
    /// The camera by name (indices change when devices come and go); None: the default.
    pub camera: Option<String>,
    /// The microphone by name; None: the default.
    pub microphone: Option<String>,
    /// The speaker by name; None: the system's.
    pub speaker: Option<String>,
}

/// Why settings could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("no place for settings on this system (no HOME or config directory)")]
    NoPlace,
    #[error("can't write settings to {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the browser's local storage is not available")]
    NoStorage,
}

impl Settings {
    /// Reads the remembered settings (defaults when there are none or they cannot be read).
    pub fn load() -> Settings {
        Settings::parse(store::read())
    }

    /// Remembers these settings.
    pub fn save(&self) -> Result<(), SettingsError> {
        store::write(&self.text())
    }

    fn parse(text: Option<String>) -> Settings {
        text.and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    fn text(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Settings {
    /// Reads settings from a file of your choosing (defaults when it has none).
    pub fn load_from(path: &std::path::Path) -> Settings {
        Settings::parse(std::fs::read_to_string(path).ok())
    }

    /// Remembers these settings in a file of your choosing.
    pub fn save_to(&self, path: &std::path::Path) -> Result<(), SettingsError> {
        store::write_to(path, &self.text())
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod store {
    use std::path::PathBuf;

    use super::SettingsError;

    /// Where the settings file lives.
    pub fn path() -> Option<PathBuf> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = env("HOLOROOM_CONFIG_DIR").or_else(|| {
            let base = if cfg!(windows) {
                env("APPDATA")
            } else if cfg!(target_os = "macos") {
                env("HOME").map(|home| home.join("Library/Application Support"))
            } else {
                env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|home| home.join(".config")))
            };
            base.map(|base| base.join("holoroom"))
        })?;
        Some(dir.join("settings.json"))
    }

    pub fn read() -> Option<String> {
        std::fs::read_to_string(path()?).ok()
    }

    pub fn write(text: &str) -> Result<(), SettingsError> {
        write_to(&path().ok_or(SettingsError::NoPlace)?, text)
    }

    pub fn write_to(path: &std::path::Path, text: &str) -> Result<(), SettingsError> {
        let failed = |source| SettingsError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        // Written whole, then moved into place: a crash never leaves half a file.
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, text).map_err(failed)?;
        std::fs::rename(&partial, path).map_err(failed)
    }
}

#[cfg(target_arch = "wasm32")]
mod store {
    use super::SettingsError;

    const KEY: &str = "holoroom.settings";

    fn storage() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok().flatten()
    }

    pub fn read() -> Option<String> {
        storage()?.get_item(KEY).ok().flatten()
    }

    pub fn write(text: &str) -> Result<(), SettingsError> {
        storage()
            .ok_or(SettingsError::NoStorage)?
            .set_item(KEY, text)
            .map_err(|_| SettingsError::NoStorage)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_a_restart_and_a_damaged_file_means_defaults() {
        let dir = std::env::temp_dir().join(format!("holoroom-settings-{}", std::process::id()));
        let file = dir.join("holoroom").join("settings.json");
        assert_eq!(Settings::load_from(&file), Settings::default(), "nothing saved yet");
        let saved = Settings {
            room: Some("standup".into()),
            name: Some("Ada Lovelace".into()),
            camera: Some("USB Camera".into()),
            microphone: None,
            speaker: Some("Headphones".into()),
        };
        saved.save_to(&file).expect("saves");
        assert_eq!(Settings::load_from(&file), saved, "read back as a new run would");
        std::fs::write(&file, "{ not json").expect("damage");
        assert_eq!(Settings::load_from(&file), Settings::default());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
