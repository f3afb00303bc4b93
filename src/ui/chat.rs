//! The chat drawer: the room's messages, newest at the bottom, and a line to write in.

use bevy_egui::egui;
use holoroom_engine::Engine;
use holoroom_engine::protocol::{MAX_CHAT_BYTES, validate_chat};

use crate::net::{ChatLog, Me};
use crate::room::presence::avatar_colour;

/// The drawer, on the right of `root`; with `focus` (just opened) the line to write in takes
/// the keyboard.
pub fn drawer(root: &mut egui::Ui, log: &mut ChatLog, focus: bool, me: Option<&Me>, engine: Option<&Engine>) {
    let ChatLog {
        messages,
        unread,
        draft,
    } = log;
    // Seen: nothing is unread while the drawer is open.
    *unread = 0;
    egui::Panel::right("chat")
        .resizable(false)
        .default_size(300.0)
        .show(root, |ui| {
            ui.heading("Chat");
            ui.separator();
            ui.with_layout(egui::Layout::bottom_up(egui::Align::Min), |ui| {
                // Bottom up: the line to write in first, the messages above it.
                write_line(ui, draft, focus, me, engine);
                ui.separator();
                egui::ScrollArea::vertical()
                    .auto_shrink([false, false])
                    .stick_to_bottom(true)
                    .show(ui, |ui| {
                        ui.with_layout(egui::Layout::top_down(egui::Align::Min), |ui| {
                            if messages.is_empty() {
                                ui.label(egui::RichText::new("No messages yet. Say hello!").weak());
                            }
                            let now = unix_now();
                            for message in messages.iter() {
                                let mine = me.is_some_and(|me| me.user.user_id == message.from.user_id);
                                let name = if mine {
                                    "You".to_owned()
                                } else {
                                    message.from.user_name.clone()
                                };
                                ui.horizontal(|ui| {
                                    let colour = super::theme::colour32(avatar_colour(message.from.user_id.as_str()));
                                    ui.label(egui::RichText::new(name).strong().color(colour));
                                    ui.label(egui::RichText::new(ago(now, message.sent_at)).weak().small());
                                });
                                ui.add(egui::Label::new(&message.text).wrap());
                                ui.add_space(6.0);
                            }
                        });
                    });
            });
        });
}

/// Seconds since the Unix epoch on this machine (0 if its clock is before it).
fn unix_now() -> u64 {
    web_time::SystemTime::now()
        .duration_since(web_time::SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// How long ago `then` was at `now` (Unix seconds), as people say it; a time a little ahead
/// (the server's clock against this one) is "just now".
fn ago(now: u64, then: u64) -> String {
    match now.saturating_sub(then) {
        0..60 => "just now".into(),
        60..120 => "a minute ago".into(),
        seconds @ 120..3600 => format!("{} minutes ago", seconds / 60),
        3600..7200 => "an hour ago".into(),
        seconds => format!("{} hours ago", seconds / 3600),
    }
}

/// The line to write in and its send button; Enter sends too.
fn write_line(ui: &mut egui::Ui, draft: &mut String, focus: bool, me: Option<&Me>, engine: Option<&Engine>) {
    if me.is_some_and(|me| me.spectator) {
        ui.label(egui::RichText::new("Spectators read the chat; only participants write.").weak());
        return;
    }
    let too_long = draft.len() > MAX_CHAT_BYTES;
    let mut send = false;
    ui.horizontal(|ui| {
        let button = ui.add_enabled(
            validate_chat(draft).is_ok(),
            egui::Button::new("Send").min_size(egui::vec2(56.0, 28.0)),
        );
        let line = ui.add(
            egui::TextEdit::singleline(draft)
                .hint_text("Message everyone")
                .desired_width(f32::INFINITY),
        );
        let entered = line.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        send = button.clicked() || entered;
        if entered || focus {
            // Keep writing after sending; a chat just opened takes the keyboard.
            line.request_focus();
        }
    });
    if too_long {
        ui.colored_label(
            super::theme::WARNING,
            format!("Too long to send: at most {MAX_CHAT_BYTES} bytes."),
        );
    }
    if send
        && validate_chat(draft).is_ok()
        && let Some(engine) = engine
    {
        engine.send_room_message(draft.trim().to_owned());
        draft.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_say_them() {
        let now = 1_800_000_000;
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now, now + 5), "just now", "a server clock a little ahead");
        assert_eq!(ago(now, now - 59), "just now");
        assert_eq!(ago(now, now - 60), "a minute ago");
        assert_eq!(ago(now, now - 5 * 60 - 10), "5 minutes ago");
        assert_eq!(ago(now, now - 3600), "an hour ago");
        assert_eq!(ago(now, now - 3 * 3600), "3 hours ago");
    }
}
