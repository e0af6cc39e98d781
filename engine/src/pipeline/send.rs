//! Messages to the customer: lists built from data, templates, the service window,
//! the outbox row.

use super::*;

impl<'a> Run<'a> {
    /// A list's rows from data: one per element of `rows_from` (at most WhatsApp's 10, ids
    /// unique), each rendered with the element as `item`; texts cut to WhatsApp's limits.
    pub(super) fn rows_from(
        &mut self,
        rf: &RowsFrom,
        actor: &str,
    ) -> Vec<(String, String, Option<String>)> {
        self.refresh_vars();
        let mut scope = self.vars.scope();
        let items = match self.pack.sandbox.eval(&rf.from, &mut scope, self.clock) {
            Ok(v) if v.is_array() => v.into_array().unwrap_or_default(),
            Ok(v) if v.is_unit() => vec![],
            Ok(v) => {
                let e = format!("`rows_from` gave {}, not an array", v.type_name());
                self.emit(
                    actor,
                    DomainEvent::ScriptFailed {
                        detail: json!({ "rows_from": e }),
                    },
                    0,
                );
                vec![]
            }
            Err(e) => {
                self.emit(
                    actor,
                    DomainEvent::ScriptFailed {
                        detail: json!({ "rows_from": e.to_string() }),
                    },
                    0,
                );
                vec![]
            }
        };
        let total = items.len();
        let caps = self.eng.caps(&self.conv.channel);
        let mut rows: Vec<(String, String, Option<String>)> = Vec::new();
        for item in items {
            if rows.len() == caps.list_rows {
                break;
            }
            let mut scope = self.vars.scope();
            scope.push_constant_dynamic("item", item);
            let mut render = |t: &switchyard_rules::template::Template, max: usize| {
                t.render(&self.pack.sandbox, &mut scope, self.clock)
                    .map(|s| cut(s.trim(), max))
            };
            let row = (|| {
                let id = render(&rf.id, caps.row_id)?;
                let title = render(&rf.title, caps.row_title)?;
                let description = match &rf.description {
                    Some(d) => Some(render(d, caps.row_description)?).filter(|d| !d.is_empty()),
                    None => None,
                };
                Ok::<_, switchyard_rules::script::ScriptError>((id, title, description))
            })();
            match row {
                Ok((id, title, d)) if !id.is_empty() && !rows.iter().any(|r| r.0 == id) => {
                    let title = if title.is_empty() {
                        cut(&id, caps.row_title)
                    } else {
                        title
                    };
                    rows.push((id, title, d));
                }
                Ok(_) => {}
                Err(e) => {
                    self.emit(
                        actor,
                        DomainEvent::ScriptFailed {
                            detail: json!({ "row": e.to_string() }),
                        },
                        0,
                    );
                }
            }
        }
        if total > rows.len() {
            self.trace.push(Step::ListRows {
                rows: rows.len(),
                of: total,
                by: actor.to_string(),
            });
        }
        rows
    }

    /// Renders and queues a message from the bot; honours the 24-hour window on WhatsApp.
    pub(super) async fn send(
        &mut self,
        m: &MessageRt,
        actor: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        self.send_as(m, actor, "bot", depth).await
    }

    /// [`Run::send`] with the message's author (`bot`, or the agent who replied).
    pub(super) async fn send_as(
        &mut self,
        m: &MessageRt,
        actor: &str,
        author: &str,
        depth: u32,
    ) -> Result<(), EngineError> {
        self.refresh_vars();
        self.holes.clear();
        self.blocked = None;
        let mut out = Outbound {
            channel: self.conv.channel.clone(),
            to: self.contact.external_id.clone(),
            text: String::new(),
            buttons: vec![],
            list: None,
            template: None,
        };
        let kind;
        let template = match m {
            MessageRt::Template(name) => Some(name.clone()),
            _ => None,
        };
        match m {
            MessageRt::Text(t) => {
                kind = "text";
                out.text = self.render(t, actor);
            }
            MessageRt::Template(name) => {
                kind = "template";
                let Some(tpl) = self.pack.templates.get(name) else {
                    return Ok(());
                };
                let settings = &self.pack.settings;
                let chain = settings.language_chain(self.contact.language.as_deref());
                if let Some((_, v)) = tpl.variant(&chain, &settings.default_language) {
                    out.text = self.render(v, actor);
                }
                if let Some(wa) = &tpl.whatsapp {
                    let params = wa.body.iter().map(|p| self.render(p, actor)).collect();
                    out.template = Some(OutboundTemplate {
                        name: wa.name.clone(),
                        language: wa.language.clone(),
                        params,
                        buttons: wa.buttons.clone(),
                    });
                }
            }
            MessageRt::Buttons {
                body,
                translations,
                buttons,
                ..
            } => {
                kind = "buttons";
                let chain = self
                    .pack
                    .settings
                    .language_chain(self.contact.language.as_deref());
                let body = MessageRt::body_for(body, translations, &chain);
                out.text = self.render(body, actor);
                out.buttons = buttons.clone();
            }
            MessageRt::List {
                body,
                translations,
                button,
                sections,
                rows_from,
                ..
            } => {
                kind = "list";
                let chain = self
                    .pack
                    .settings
                    .language_chain(self.contact.language.as_deref());
                let body = MessageRt::body_for(body, translations, &chain);
                out.text = self.render(body, actor);
                let rows = match rows_from {
                    Some(rf) => self.rows_from(rf, actor),
                    None => sections
                        .iter()
                        .flat_map(|(_, r)| r.iter().cloned())
                        .collect(),
                };
                if rows.is_empty() {
                    let note = format!(
                        "The bot had nothing to list (no rows) for: \"{}\"; please take over",
                        out.text
                    );
                    self.trace.push(Step::Send {
                        message: kind.to_string(),
                        by: actor.to_string(),
                        blocked: Some("no rows".into()),
                        template: template.clone(),
                    });
                    let q = self.conv.queue.clone();
                    return Box::pin(self.handoff(q, None, Some(note), actor, depth)).await;
                }
                out.list = Some(OutboundList {
                    button: button.clone(),
                    descriptions: if rows.iter().any(|r| r.2.is_some()) {
                        rows.iter().map(|r| r.2.clone()).collect()
                    } else {
                        vec![]
                    },
                    rows: rows.into_iter().map(|(id, title, _)| (id, title)).collect(),
                });
            }
        }
        // A message with a hole that did not render is never sent: a person takes over.
        if !self.holes.is_empty() {
            let why = std::mem::take(&mut self.holes).join("; ");
            self.trace.push(Step::Send {
                message: kind.to_string(),
                by: actor.to_string(),
                blocked: Some("a hole did not render".into()),
                template: template.clone(),
            });
            self.blocked = Some(why.clone());
            let note = format!(
                "The bot did not send a {kind} message because part of it could not be filled in ({why}); please take over"
            );
            let q = self.conv.queue.clone();
            return Box::pin(self.handoff(q, None, Some(note), actor, depth)).await;
        }
        // A channel with a service window (WhatsApp: 24 hours from the customer's last
        // message) carries free-form messages only while it is open.
        let caps = self.eng.caps(&self.conv.channel);
        let window = self.eng.window_open(&self.conv, self.now);
        if window {
            // Inside the window the text form goes out, with the template's quick replies as
            // reply buttons when they fit.
            if let Some(t) = out.template.take() {
                if t.buttons.len() <= caps.buttons {
                    out.buttons = t.buttons.iter().map(|b| (b.clone(), b.clone())).collect();
                } else {
                    out.template = Some(t);
                }
            }
        } else if out.template.is_none() {
            let note = format!("Could not send outside WhatsApp's 24-hour window (only approved templates may be): \"{}\"", out.text);
            self.trace.push(Step::Send {
                message: kind.to_string(),
                by: actor.to_string(),
                blocked: Some("service window closed".into()),
                template: template.clone(),
            });
            let q = self.conv.queue.clone();
            return Box::pin(self.handoff(q, None, Some(note), actor, depth)).await;
        }
        let payload = json!({
            "buttons": out.buttons,
            "list": out.list,
            "template": out.template,
        });
        // The message row (author, time, status) is its own record: no audit row besides.
        self.trace.push(Step::Send {
            message: kind.to_string(),
            by: actor.to_string(),
            blocked: None,
            template,
        });
        if author != "bot" {
            self.sla_on_agent_reply(actor);
        } else {
            self.said = true;
        }
        self.cs.messages.push(NewMessage {
            direction: Direction::Out,
            kind: kind.into(),
            body: out.text.clone(),
            payload,
            provider_id: None,
            author: author.into(),
            status: "pending".into(),
            outbound: Some(out),
        });
        Ok(())
    }
}
