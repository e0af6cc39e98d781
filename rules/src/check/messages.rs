//! Messages a pack sends (text, buttons, lists, templates) against the channel's limits, and
//! the service-window rule: what events outside the window send must be approved templates.

use super::*;

impl Ctx<'_> {
    /// An interactive body's `translations`: language codes, limits, templates.
    fn translations(
        &mut self,
        f: usize,
        t: Option<&crate::span::Entries<Sp<String>>>,
        what: &str,
        max: usize,
    ) -> Option<Vec<(String, crate::template::Template)>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (lang, body) in t.iter().flat_map(|m| m.iter()) {
            if !crate::lang::is_code(&lang.value) {
                self.err(
                    f,
                    lang.pos,
                    format!("`{}` is not a language code", lang.value),
                )
                .hint("use `en`, `ur`, `roman_ur`, … as in the templates");
                ok = false;
                continue;
            }
            self.limit(f, body, what, max);
            match self.template(f, body) {
                Some(c) => out.push((lang.value.clone(), c)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(super) fn message(&mut self, f: usize, send: &Sp<Send>) -> Option<MessageRt> {
        match &send.value {
            Send::Text(t) => {
                self.limit(f, t, "text", self.caps.text);
                self.template(f, t).map(MessageRt::Text)
            }
            Send::Template(name) => self
                .reference(f, name, "templates", "template")
                .then(|| MessageRt::Template(name.value.clone())),
            Send::Buttons(b) => {
                let n = b.buttons.len();
                if n == 0 || n > self.caps.buttons {
                    self.err(
                        f,
                        b.pos,
                        format!(
                            "{n} reply buttons; {} allows 1 to {}",
                            self.caps.label, self.caps.buttons
                        ),
                    )
                    .hint("use a `list` for more choices");
                }
                self.limit(f, &b.body, "button message body", self.caps.button_body);
                if let Some(ft) = &b.footer {
                    self.limit(f, ft, "footer", self.caps.footer);
                }
                let mut ids = BTreeSet::new();
                let mut titles = BTreeSet::new();
                for c in &b.buttons {
                    self.limit(f, &c.title, "button title", self.caps.button_title);
                    self.limit(f, &c.id, "button id", self.caps.button_id);
                    if c.description.is_some() {
                        self.err(f, c.pos, "reply buttons have no description")
                            .hint("only list rows have one");
                    }
                    if !ids.insert(c.id.value.clone()) {
                        self.err(
                            f,
                            c.id.pos,
                            format!("button id `{}` is used twice in this message", c.id.value),
                        );
                    }
                    if !titles.insert(c.title.value.clone()) {
                        self.err(
                            f,
                            c.title.pos,
                            format!(
                                "button title `{}` is used twice; WhatsApp needs unique titles",
                                c.title.value
                            ),
                        );
                    }
                }
                let body = self.template(f, &b.body)?;
                let translations = self.translations(
                    f,
                    b.translations.as_ref(),
                    "button message body",
                    self.caps.button_body,
                )?;
                Some(MessageRt::Buttons {
                    body,
                    translations,
                    footer: b.footer.as_ref().map(|x| x.value.clone()),
                    buttons: b
                        .buttons
                        .iter()
                        .map(|c| (c.id.value.clone(), c.title.value.clone()))
                        .collect(),
                })
            }
            Send::List(l) => {
                let rows: usize = l.sections.iter().map(|s| s.rows.len()).sum();
                let rows_from = match (&l.rows_from, &l.row) {
                    (Some(from), Some(row)) => {
                        if !l.sections.is_empty() {
                            self.err(
                                f,
                                from.pos,
                                "a list has either `sections` or `rows_from`, not both",
                            )
                            .hint("rows from data replace the fixed sections");
                        }
                        let from = self.script(f, from);
                        let id = self.template_with(f, &row.id, &["item"]);
                        let title = self.template_with(f, &row.title, &["item"]);
                        let description = match &row.description {
                            Some(d) => Some(self.template_with(f, d, &["item"])?),
                            None => None,
                        };
                        Some(Box::new(RowsFrom {
                            from: from?,
                            id: id?,
                            title: title?,
                            description,
                        }))
                    }
                    (Some(from), None) => {
                        self.err(f, from.pos, "`rows_from` without `row`")
                            .hint("add `row: { id: \"{{item.name}}\", title: \"{{item.name}}\" }`");
                        return None;
                    }
                    (None, Some(row)) => {
                        self.err(f, row.pos, "`row` without `rows_from`")
                            .hint("add `rows_from: EXPRESSION` giving an array (e.g. `orders`)");
                        return None;
                    }
                    (None, None) => None,
                };
                if rows_from.is_none() && (rows == 0 || rows > self.caps.list_rows) {
                    self.err(
                        f,
                        l.pos,
                        format!(
                            "{rows} list rows; {} allows 1 to {} across all sections",
                            self.caps.label, self.caps.list_rows
                        ),
                    );
                }
                if l.sections.len() > self.caps.list_sections {
                    self.err(
                        f,
                        l.pos,
                        format!(
                            "{} sections; {} allows at most {}",
                            l.sections.len(),
                            self.caps.label,
                            self.caps.list_sections
                        ),
                    );
                }
                self.limit(f, &l.body, "list body", self.caps.text);
                self.limit(f, &l.button, "list button", self.caps.list_button);
                if let Some(ft) = &l.footer {
                    self.limit(f, ft, "footer", self.caps.footer);
                }
                let mut ids = BTreeSet::new();
                for s in &l.sections {
                    if let Some(t) = &s.title {
                        self.limit(f, t, "section title", self.caps.section_title);
                    }
                    for r in &s.rows {
                        self.limit(f, &r.title, "row title", self.caps.row_title);
                        self.limit(f, &r.id, "row id", self.caps.row_id);
                        if let Some(ds) = &r.description {
                            self.limit(f, ds, "row description", self.caps.row_description);
                        }
                        if !ids.insert(r.id.value.clone()) {
                            self.err(
                                f,
                                r.id.pos,
                                format!("row id `{}` is used twice in this list", r.id.value),
                            );
                        }
                    }
                }
                let body = self.template(f, &l.body)?;
                let translations =
                    self.translations(f, l.translations.as_ref(), "list body", self.caps.text)?;
                Some(MessageRt::List {
                    rows_from,
                    body,
                    translations,
                    button: l.button.value.clone(),
                    footer: l.footer.as_ref().map(|x| x.value.clone()),
                    sections: l
                        .sections
                        .iter()
                        .map(|s| {
                            (
                                s.title.as_ref().map(|t| t.value.clone()),
                                s.rows
                                    .iter()
                                    .map(|r| {
                                        (
                                            r.id.value.clone(),
                                            r.title.value.clone(),
                                            r.description.as_ref().map(|d| d.value.clone()),
                                        )
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                })
            }
        }
    }
}

/// A flow that can start without an open window must open with approved templates: its first
/// step, and every step reached by a timeout (the customer said nothing), may send only a
/// template with a WhatsApp form.
pub(super) fn window_checks(cx: &mut Ctx) {
    if cx.caps.service_window.is_none() {
        return;
    }
    let raw = cx.raw;
    let mut starters: Vec<(usize, &Sp<String>, String)> = Vec::new();
    let mut replies: Vec<(usize, &Sp<Send>, String)> = Vec::new();
    for (f, r) in &raw.rules {
        if outside_window(&r.when.value) {
            for a in &r.then {
                match &a.value {
                    Action::StartFlow(fl) => starters.push((*f, fl, r.when.value.clone())),
                    Action::Reply(m) => replies.push((*f, m, r.when.value.clone())),
                    _ => {}
                }
            }
        }
    }
    for (f, s) in &raw.schedules {
        for a in &s.then {
            match &a.value {
                Action::StartFlow(fl) => {
                    starters.push((*f, fl, format!("schedule.{}", s.name.value)))
                }
                Action::Reply(m) => replies.push((*f, m, format!("schedule.{}", s.name.value))),
                _ => {}
            }
        }
    }
    for (f, m, ev) in replies {
        if !is_wa_template(cx, &m.value) {
            cx.err(f, m.pos, format!("a reply on `{ev}` can go out when the 24-hour window is closed, so it must be a WhatsApp template"))
                .hint("use `reply: { template: NAME }` with a template that has a `whatsapp:` form");
        }
    }
    let mut checked = BTreeSet::new();
    for (_, fl_name, ev) in starters {
        if !checked.insert(fl_name.value.clone()) {
            continue;
        }
        let Some(fl) = raw.flows.iter().find(|x| x.name.value == fl_name.value) else {
            continue;
        };
        let flow = &fl.value.value;
        // Steps entered without a customer message: the start, and timeout targets (recursively
        // through steps that do not wait).
        let mut todo = vec![flow.start.value.clone()];
        let mut seen = BTreeSet::new();
        while let Some(sn) = todo.pop() {
            if !seen.insert(sn.clone()) {
                continue;
            }
            let Some(st) = flow.steps.get(&sn) else {
                continue;
            };
            if let Some(send) = &st.send {
                if !is_wa_template(cx, &send.value) {
                    let first = sn == flow.start.value;
                    let what = if first {
                        "its first message"
                    } else {
                        "a message sent after a timeout"
                    };
                    cx.err(fl.file, send.pos, format!(
                        "flow `{}` can start on `{ev}`, outside the 24-hour window, and {what} (step `{sn}`) is not a WhatsApp template",
                        fl.name.value
                    ))
                    .hint("send `{ template: NAME }` whose template has a `whatsapp:` form (an approved template)");
                }
            }
            if let Some(t) = &st.timeout {
                if let Some(g) = &t.goto {
                    todo.push(g.value.clone());
                }
            }
            if st.on.is_none() && st.capture.is_none() {
                let gotos = st.branch.iter().map(|b| &b.goto).chain([&st.goto]);
                todo.extend(gotos.flatten().map(|g| g.value.clone()));
            }
        }
    }
}

pub(super) fn is_wa_template(cx: &Ctx, m: &Send) -> bool {
    matches!(m, Send::Template(t) if cx.wa_templates.contains(&t.value) || cx.broken("templates", &t.value))
}
