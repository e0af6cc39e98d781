//! Order lookups through the `Lookup` port: found, nothing, or the store unavailable.

use super::*;

impl<'a> Run<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn lookup(
        &mut self,
        connector: &str,
        action: LookupAction,
        by: Option<&rhai::AST>,
        bind: &str,
        value: Option<&switchyard_rules::template::Template>,
        actor: &str,
        depth: u32,
    ) -> Result<Flow, EngineError> {
        self.refresh_vars();
        let key = match by {
            Some(ast) => {
                let mut scope = self.vars.scope();
                match self.pack.sandbox.eval(ast, &mut scope, self.clock) {
                    Ok(v) => dynamic_to_json(&v),
                    Err(e) => {
                        self.emit(
                            actor,
                            DomainEvent::ScriptFailed {
                                detail: json!({ "lookup": connector, "error": e.to_string() }),
                            },
                            0,
                        );
                        Value::Null
                    }
                }
            }
            None => self
                .vars
                .get(bind)
                .map(dynamic_to_json)
                .unwrap_or(Value::Null),
        };
        let value = value.map(|v| self.render(v, actor));
        let name = format!("{action:?}");
        // Nothing irreversible on a guess: only right after the customer chose it with a
        // button (or its title, or a plain yes for it) in this message.
        if switchyard_rules::pack::is_irreversible(&self.pack.connectors, connector, action)
            && !self.chose
        {
            self.trace.push(Step::Withheld {
                connector: connector.to_string(),
                action: name.clone(),
                key: key.to_string(),
            });
            let note = format!(
                "The bot did not run `{name}` on `{connector}` for {key}: the customer had not confirmed it with a button. Please check with the customer."
            );
            if self.conv.flow.is_some() {
                self.end_flow(
                    false,
                    "an irreversible action was not confirmed",
                    actor,
                    depth,
                );
            }
            self.handoff(None, None, Some(note), actor, depth).await?;
            return Ok(Flow::Abort);
        }
        let result = if key.is_null() || key == json!("") {
            if action == LookupAction::FindOrders {
                // Nothing to look up by: no orders, and the flow asks for a number.
                Ok(Some(json!([])))
            } else {
                Err(LookupError::NoKey)
            }
        } else {
            self.eng
                .lookup()
                .call(connector, action, &key, value.as_deref())
                .await
        };
        let result = match result {
            Ok(None) if action == LookupAction::FindOrders => Ok(Some(json!([]))),
            r => r,
        };
        match result {
            Ok(Some(v)) => {
                // `find_orders` always answers a list (empty: nothing found).
                let found = v.as_array().map_or(1, |a| a.len());
                self.trace.push(Step::Lookup {
                    connector: connector.to_string(),
                    action: name.to_string(),
                    key: key.to_string(),
                    found,
                    failed: None,
                });
                let outcome = Ok(v.as_array().map_or(json!(true), |a| json!(a.len())));
                self.emit(
                    actor,
                    DomainEvent::Lookup {
                        connector: connector.to_string(),
                        action: name.to_string(),
                        key: key.to_string(),
                        outcome,
                    },
                    depth,
                );
                self.vars.set_json(bind, &v);
                // Kept by the running flow, and by a flow started later in this event. After
                // an irreversible action, earlier buttons no longer decide anything (a second
                // tap on "Yes, cancel it", an old "Confirm").
                let done = switchyard_rules::pack::is_irreversible(
                    &self.pack.connectors,
                    connector,
                    action,
                );
                if let Some(fs) = self.conv.flow.as_mut() {
                    fs.bound.insert(bind.to_string(), v.clone());
                    if done {
                        fs.asked.clear();
                    }
                }
                self.pending_bound.insert(bind.to_string(), v);
                Ok(Flow::Continue)
            }
            other => {
                let store_down = matches!(other, Err(LookupError::Failed(_)));
                let why = match other {
                    Ok(_) => format!("found nothing for {key}"),
                    Err(e) => e.to_string(),
                };
                self.trace.push(Step::Lookup {
                    connector: connector.to_string(),
                    action: name.to_string(),
                    key: key.to_string(),
                    found: 0,
                    failed: Some(why.to_string()),
                });
                self.emit(
                    actor,
                    DomainEvent::Lookup {
                        connector: connector.to_string(),
                        action: name.to_string(),
                        key: key.to_string(),
                        outcome: Err(why.clone()),
                    },
                    depth,
                );
                let note =
                    format!("Lookup `{name}` on `{connector}` {why}; the bot could not go on");
                if self.conv.flow.is_some() {
                    self.end_flow(false, "a lookup failed", actor, depth);
                }
                // What the customer is told (`Run::acknowledge`): the store is down, or it
                // found nothing.
                self.handoff_reason.get_or_insert(if store_down {
                    HandoffReason::StoreUnavailable
                } else {
                    HandoffReason::NotFound
                });
                self.handoff(None, None, Some(note), actor, depth).await?;
                Ok(Flow::Abort)
            }
        }
    }
}
