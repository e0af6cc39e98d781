//! Asking instead of guessing (`settings.clarify`, a two-stage fallback): when the classifier
//! is unsure between two intents, the bot asks with buttons naming them in the customer's
//! language, and "something else"; the answer runs the original message with the intent
//! picked. An unclear answer goes to a person, who is told what was asked.

use super::*;

/// The id of the clarifying buttons: `clarify:INTENT`, and this for "something else".
const OTHER: &str = "clarify:other";

/// What the customer's reply to the clarifying question picked.
pub(super) enum Picked {
    Intent(String),
    /// "Something else", or an answer that names none of the choices.
    Unclear,
}

impl<'a> Run<'a> {
    /// Asks which of `candidates` the message meant: the pack's `clarify.template` with
    /// `clarify.first` and `clarify.second`, and three buttons.
    pub(super) async fn ask_clarify(
        &mut self,
        text: &str,
        candidates: (String, String),
        scores: &[(String, f32)],
    ) -> Result<(), EngineError> {
        let Some(cl) = self.pack.settings.clarify.clone() else {
            return Ok(());
        };
        let chain = self
            .pack
            .settings
            .language_chain(self.contact.language.as_deref());
        let first = self.pack.intent_label(&candidates.0, &chain);
        let second = self.pack.intent_label(&candidates.1, &chain);
        let other = switchyard_rules::pack::pick_language(&cl.other, &chain)
            .unwrap_or_else(|| "Something else".to_string());
        let milli = |x: f32| (x as f64 * 1000.0).round() / 1000.0;
        let score = |n: &str| {
            scores
                .iter()
                .find(|(i, _)| i == n)
                .map_or(0.0, |(_, s)| milli(*s))
        };
        self.trace.push(Step::Clarify {
            candidates: vec![
                (candidates.0.clone(), score(&candidates.0)),
                (candidates.1.clone(), score(&candidates.1)),
            ],
        });
        self.vars.set_json(
            "clarify",
            &json!({ "first": first, "second": second, "intents": [candidates.0, candidates.1] }),
        );
        let Some(body) = self
            .pack
            .templates
            .get(&cl.template)
            .and_then(|t| t.variant(&chain, &self.pack.settings.default_language))
            .map(|(_, v)| v.clone())
        else {
            return Ok(());
        };
        let message = MessageRt::Buttons {
            body,
            translations: vec![],
            footer: None,
            buttons: vec![
                (format!("clarify:{}", candidates.0), first),
                (format!("clarify:{}", candidates.1), second),
                (OTHER.to_string(), other),
            ],
        };
        self.send(&message, "system", 0).await?;
        if self.said {
            self.conv.asking = Some(Asking {
                text: text.to_string(),
                intents: vec![candidates.0, candidates.1],
            });
        }
        Ok(())
    }

    /// What the reply to the clarifying question picked: a tapped button, or its title typed
    /// (read as the classifier reads, in any of the pack's languages).
    pub(super) fn picked(&self, asking: &Asking, text: &str, choice: Option<&str>) -> Picked {
        if let Some(c) = choice {
            return match c.strip_prefix("clarify:") {
                Some(i) if asking.intents.iter().any(|x| x == i) => Picked::Intent(i.to_string()),
                _ => Picked::Unclear,
            };
        }
        let canon = self.pack.canon(text);
        if canon.is_empty() {
            return Picked::Unclear;
        }
        for intent in &asking.intents {
            let labels = self
                .pack
                .intents
                .iter()
                .find(|i| &i.name == intent)
                .map(|i| i.label.clone())
                .unwrap_or_default();
            let named = labels
                .iter()
                .map(|(_, l)| l.as_str())
                .chain([intent.replace('_', " ").as_str()])
                .any(|l| self.pack.canon(l) == canon);
            if named {
                return Picked::Intent(intent.clone());
            }
        }
        Picked::Unclear
    }

    /// The customer did not pick one of the intents: a person takes the conversation, with
    /// a note saying what the bot asked, and the customer hears that someone will reply.
    pub(super) async fn clarify_unclear(
        &mut self,
        asking: &Asking,
        reply: &str,
    ) -> Result<(), EngineError> {
        self.trace.push(Step::Clarified { intent: None });
        let note = format!(
            "The bot was unsure what \"{}\" meant ({}) and asked; the answer was \"{}\". Please take over.",
            asking.text,
            asking.intents.join(" or "),
            reply
        );
        self.handoff_reason.get_or_insert(HandoffReason::Retries);
        self.handoff(None, None, Some(note), "system", 0).await
    }
}
