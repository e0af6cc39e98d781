//! What a channel can carry: its [`ChannelCaps`]. The validator checks a pack's messages
//! against the strictest of the channels a deployment serves ([`Channels::strictest`]) and the
//! engine asks the conversation's channel ([`Channels::of`]) for its service window and list
//! limits, so neither names a channel in its logic.
//!
//! Each channel's caps are declared here, beside the type, because the validator (this crate,
//! which does no I/O and knows no connector) needs them; the connector that carries the
//! channel registers them ([`Channels::standard`] lists every channel this build serves).
//! Adding a channel: its caps here, its name in [`Channels::standard`], a connector module
//! and a webhook route (the checklist is in `ARCHITECTURE.md`).

use std::time::Duration;

/// A kind of media a channel can carry in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Image,
    Audio,
    Video,
    Document,
    Sticker,
}

/// What one channel can carry. Lengths are in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelCaps {
    /// The channel's name on a conversation: `name`, or `name:<id>` for a second account
    /// (e.g. `whatsapp:<phone_number_id>`).
    pub name: &'static str,
    /// How diagnostics name it ("WhatsApp allows at most …").
    pub label: &'static str,
    /// Free-form messages only within this long after the customer's last message; outside
    /// it only approved templates. `None`: no such window.
    pub service_window: Option<Duration>,
    /// Whether it has approved message templates (the only thing sent outside the window).
    pub templates: bool,
    pub text: usize,
    pub buttons: usize,
    pub button_title: usize,
    pub button_id: usize,
    pub button_body: usize,
    pub footer: usize,
    pub list_rows: usize,
    pub list_sections: usize,
    pub list_button: usize,
    pub section_title: usize,
    pub row_title: usize,
    pub row_id: usize,
    pub row_description: usize,
    pub template_buttons: usize,
    pub media: &'static [MediaKind],
}

/// WhatsApp through the Cloud API (limits from Meta's reference for interactive messages and
/// templates).
pub const WHATSAPP: ChannelCaps = ChannelCaps {
    name: "whatsapp",
    label: "WhatsApp",
    service_window: Some(Duration::from_secs(24 * 3600)),
    templates: true,
    text: 4096,
    buttons: 3,
    button_title: 20,
    button_id: 256,
    button_body: 1024,
    footer: 60,
    list_rows: 10,
    list_sections: 10,
    list_button: 20,
    section_title: 24,
    row_title: 24,
    row_id: 200,
    row_description: 72,
    template_buttons: 10,
    media: &[
        MediaKind::Image,
        MediaKind::Audio,
        MediaKind::Video,
        MediaKind::Document,
        MediaKind::Sticker,
    ],
};

/// The web chat widget: no service window and no templates; choices are shown like
/// WhatsApp's so one pack serves both.
pub const WEBCHAT: ChannelCaps = ChannelCaps {
    name: "webchat",
    label: "web chat",
    service_window: None,
    templates: false,
    media: &[],
    ..WHATSAPP
};

impl ChannelCaps {
    /// Whether a conversation's channel is this one (`name` or `name:<account>`).
    pub fn serves(&self, channel: &str) -> bool {
        channel
            .strip_prefix(self.name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
    }

    /// Whether a free-form message may go out now, the customer having last written at
    /// `last_customer_at` (milliseconds since the epoch).
    pub fn window_open(&self, last_customer_at: Option<i64>, now: i64) -> bool {
        match self.service_window {
            None => true,
            Some(w) => last_customer_at.is_some_and(|t| now - t < w.as_millis() as i64),
        }
    }

    /// The strictest of several channels: each limit the smallest, a service window if any
    /// has one (the shortest). Named after the channel that sets every limit, when one does.
    pub fn strictest(all: &[ChannelCaps]) -> ChannelCaps {
        let Some(first) = all.first() else {
            return WHATSAPP;
        };
        let mut c = *first;
        for o in &all[1..] {
            c.service_window = match (c.service_window, o.service_window) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            c.templates |= o.templates;
            c.text = c.text.min(o.text);
            c.buttons = c.buttons.min(o.buttons);
            c.button_title = c.button_title.min(o.button_title);
            c.button_id = c.button_id.min(o.button_id);
            c.button_body = c.button_body.min(o.button_body);
            c.footer = c.footer.min(o.footer);
            c.list_rows = c.list_rows.min(o.list_rows);
            c.list_sections = c.list_sections.min(o.list_sections);
            c.list_button = c.list_button.min(o.list_button);
            c.section_title = c.section_title.min(o.section_title);
            c.row_title = c.row_title.min(o.row_title);
            c.row_id = c.row_id.min(o.row_id);
            c.row_description = c.row_description.min(o.row_description);
            c.template_buttons = c.template_buttons.min(o.template_buttons);
        }
        let same_limits = |o: &ChannelCaps| {
            ChannelCaps {
                name: c.name,
                label: c.label,
                service_window: c.service_window,
                templates: c.templates,
                media: c.media,
                ..*o
            } == c
        };
        if let Some(o) = all.iter().find(|o| same_limits(o)) {
            c.label = o.label;
        } else {
            c.label = "every channel";
        }
        c
    }
}

/// The channels a deployment serves, each with its caps.
#[derive(Debug, Clone)]
pub struct Channels(Vec<ChannelCaps>);

impl Default for Channels {
    fn default() -> Self {
        Channels::standard()
    }
}

impl Channels {
    /// Every channel this build has a connector for.
    pub fn standard() -> Channels {
        Channels(vec![WHATSAPP, WEBCHAT])
    }

    pub fn new(caps: impl IntoIterator<Item = ChannelCaps>) -> Channels {
        Channels(caps.into_iter().collect())
    }

    /// The caps of a conversation's channel; a channel no connector declared gets the
    /// strictest of all (never more than some channel allows).
    pub fn of(&self, channel: &str) -> ChannelCaps {
        self.0
            .iter()
            .find(|c| c.serves(channel))
            .copied()
            .unwrap_or_else(|| self.strictest())
    }

    /// What a pack must keep to so that every channel carries its messages.
    pub fn strictest(&self) -> ChannelCaps {
        ChannelCaps::strictest(&self.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ChannelCaps> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_finds_its_channel_and_the_window_follows_it() {
        let ch = Channels::standard();
        assert_eq!(ch.of("whatsapp").name, "whatsapp");
        assert_eq!(ch.of("whatsapp:1234").name, "whatsapp");
        assert_eq!(ch.of("webchat").name, "webchat");
        // A prefix is not a channel: `whatsappx` is unknown, so it gets the strictest caps.
        assert_eq!(ch.of("whatsappx").label, "WhatsApp");
        let day = 24 * 3600 * 1000;
        assert!(ch.of("whatsapp").window_open(Some(0), day - 1));
        assert!(!ch.of("whatsapp").window_open(Some(0), day));
        assert!(!ch.of("whatsapp").window_open(None, 0));
        assert!(ch.of("webchat").window_open(None, 0));
    }

    #[test]
    fn the_strictest_takes_each_smallest_limit_and_any_window() {
        let roomy = ChannelCaps {
            name: "roomy",
            label: "Roomy",
            service_window: None,
            buttons: 8,
            list_rows: 3,
            ..WEBCHAT
        };
        let s = ChannelCaps::strictest(&[roomy, WHATSAPP]);
        assert_eq!((s.buttons, s.list_rows), (3, 3));
        assert_eq!(s.service_window, WHATSAPP.service_window);
        assert_eq!(s.label, "every channel");
        assert_eq!(Channels::standard().strictest().label, "WhatsApp");
    }
}
