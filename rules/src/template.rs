//! Templates: text with `{{ expr }}` holes, each a Rhai expression compiled at load.

use rhai::{Scope, AST};

#[cfg(test)]
use crate::script::Values;
use crate::script::{display, Clock, CompileError, Sandbox, ScriptError};

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Expr(AST),
    /// A hole whose values have words per language (`settings.values`): the expression.
    Worded(AST, String),
    /// `[[ … ]]`: left out, brackets and all, when a hole in it shows nothing (an order
    /// without tracking: `[[Tracking: {{order.tracking_url}}]]`).
    Optional(Vec<Part>),
}

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

/// A template compile error; `offset` is the byte offset inside the template text where the
/// broken expression starts, `inner` the position inside that expression.
#[derive(Debug, Clone)]
pub struct TemplateError {
    pub message: String,
    pub offset: usize,
    pub inner: Option<CompileError>,
}

impl Template {
    /// The compiled holes.
    pub fn holes(&self) -> impl Iterator<Item = &AST> {
        fn walk<'p>(parts: &'p [Part], out: &mut Vec<&'p AST>) {
            for p in parts {
                match p {
                    Part::Expr(a) | Part::Worded(a, _) => out.push(a),
                    Part::Optional(inner) => walk(inner, out),
                    Part::Lit(_) => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.parts, &mut out);
        out.into_iter()
    }

    /// Text taken as it is: `{{` in it is not a hole (what an agent types).
    pub fn literal(text: &str) -> Template {
        Template {
            parts: vec![Part::Lit(text.to_string())],
            source: text.to_string(),
        }
    }

    pub fn compile(sandbox: &Sandbox, src: &str) -> Result<Template, TemplateError> {
        Template::compile_with(sandbox, src, &[])
    }

    /// Compiles with names only this template sees besides the scope (a list row's `item`).
    pub fn compile_with(
        sandbox: &Sandbox,
        src: &str,
        local: &[&str],
    ) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut base = 0;
        while let Some(open) = rest.find("[[") {
            holes(sandbox, &rest[..open], base, local, &mut parts)?;
            let after = &rest[open + 2..];
            let Some(close) = after.find("]]") else {
                return Err(TemplateError {
                    message: "`[[` is not closed by `]]`".into(),
                    offset: base + open,
                    inner: None,
                });
            };
            let mut inner = Vec::new();
            holes(sandbox, &after[..close], base + open + 2, local, &mut inner)?;
            if !inner
                .iter()
                .any(|p| matches!(p, Part::Expr(_) | Part::Worded(..)))
            {
                return Err(TemplateError {
                    message: "`[[ … ]]` has no `{{ }}` hole: nothing would ever leave it out"
                        .into(),
                    offset: base + open,
                    inner: None,
                });
            }
            parts.push(Part::Optional(inner));
            let consumed = open + 2 + close + 2;
            base += consumed;
            rest = &rest[consumed..];
        }
        holes(sandbox, rest, base, local, &mut parts)?;
        Ok(Template {
            parts,
            source: src.to_string(),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn render(
        &self,
        sandbox: &Sandbox,
        scope: &mut Scope<'static>,
        clock: Clock,
    ) -> Result<String, ScriptError> {
        let mut out = String::with_capacity(self.source.len());
        render_parts(&self.parts, sandbox, scope, clock, &mut out)?;
        Ok(out)
    }
}

/// Appends the rendered parts; `false` when a hole showed nothing (what leaves an optional
/// part out).
fn render_parts(
    parts: &[Part],
    sandbox: &Sandbox,
    scope: &mut Scope<'static>,
    clock: Clock,
    out: &mut String,
) -> Result<bool, ScriptError> {
    let mut all = true;
    for p in parts {
        match p {
            Part::Lit(s) => out.push_str(s),
            Part::Expr(ast) => {
                let shown = display(&sandbox.eval(ast, scope, clock)?);
                all &= !shown.trim().is_empty();
                out.push_str(&shown);
            }
            Part::Worded(ast, expr) => {
                let shown = display(&sandbox.eval(ast, scope, clock)?);
                all &= !shown.trim().is_empty();
                out.push_str(&sandbox.value_words(expr, shown, language(scope).as_deref()));
            }
            Part::Optional(inner) => {
                let mut part = String::new();
                if render_parts(inner, sandbox, scope, clock, &mut part)? {
                    out.push_str(&part);
                }
            }
        }
    }
    Ok(all)
}

/// The contact's language in the scope (`contact.language`), if set.
fn language(scope: &Scope<'static>) -> Option<String> {
    let contact = scope.get_value::<rhai::Map>("contact")?;
    contact
        .get("language")
        .and_then(|l| l.clone().into_immutable_string().ok())
        .map(|l| l.to_string())
}

/// The literal text and `{{ }}` holes of `src` (at byte `base` of the template), onto `parts`.
fn holes(
    sandbox: &Sandbox,
    src: &str,
    base: usize,
    local: &[&str],
    parts: &mut Vec<Part>,
) -> Result<(), TemplateError> {
    let mut rest = src;
    let mut base = base;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Lit(rest[..open].to_string()));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(TemplateError {
                message: "`{{` is not closed by `}}`".into(),
                offset: base + open,
                inner: None,
            });
        };
        let expr = &after[..close];
        let lead = expr.len() - expr.trim_start().len();
        let expr_offset = base + open + 2 + lead;
        if expr.trim().is_empty() {
            return Err(TemplateError {
                message: "empty `{{ }}`".into(),
                offset: base + open,
                inner: None,
            });
        }
        let ast = sandbox
            .compile_expression(expr.trim(), local)
            .map_err(|e| TemplateError {
                message: e.message.clone(),
                offset: expr_offset,
                inner: Some(e),
            })?;
        let key = expr.trim();
        parts.push(if sandbox.has_values(key) {
            Part::Worded(ast, key.to_string())
        } else {
            Part::Expr(ast)
        });
        let consumed = open + 2 + close + 2;
        base += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Vars;

    fn sandbox() -> Sandbox {
        Sandbox::new(Default::default(), vec![])
    }

    #[test]
    fn renders_expressions_in_scope() {
        let sb = sandbox();
        let t = Template::compile(
            &sb,
            "Order {{order.name}} is {{ order.status }}; total Rs {{order.total}}",
        )
        .unwrap();
        let mut v = Vars::empty();
        v.set_json(
            "order",
            &serde_json::json!({"name": "#10234", "status": "dispatched", "total": 2499.0}),
        );
        let clock = Clock {
            now: chrono::Utc::now(),
            window_open: true,
        };
        let s = t.render(&sb, &mut v.scope(), clock).unwrap();
        assert_eq!(s, "Order #10234 is dispatched; total Rs 2499");
    }

    #[test]
    fn optional_parts_and_values_in_the_contacts_language() {
        let mut values = Values::new();
        values.insert(
            "order.status".into(),
            [(
                "dispatched".to_string(),
                vec![
                    ("en".to_string(), "on its way".to_string()),
                    ("ur".to_string(), "روانہ ہو چکا".to_string()),
                ],
            )]
            .into(),
        );
        let sb = sandbox().with_values(values, "en");
        let t = Template::compile(
            &sb,
            "{{order.name}} is {{order.status}}.[[ Tracking: {{order.tracking_url}}]]",
        )
        .unwrap();
        let clock = Clock {
            now: chrono::Utc::now(),
            window_open: true,
        };
        let mut v = Vars::empty();
        v.set_json(
            "order",
            &serde_json::json!({"name": "#1", "status": "dispatched"}),
        );
        v.set_json("contact", &serde_json::json!({"language": "ur"}));
        assert_eq!(
            t.render(&sb, &mut v.scope(), clock).unwrap(),
            "#1 is روانہ ہو چکا."
        );
        v.set_json(
            "order",
            &serde_json::json!({"name": "#1", "status": "packed", "tracking_url": "https://t/1"}),
        );
        v.set_json("contact", &serde_json::json!({"language": "roman_ur"}));
        // A value without words shows as it is; a hole with something keeps its part.
        assert_eq!(
            t.render(&sb, &mut v.scope(), clock).unwrap(),
            "#1 is packed. Tracking: https://t/1"
        );
        // No language: the default's words.
        v.set_json(
            "order",
            &serde_json::json!({"name": "#1", "status": "dispatched"}),
        );
        v.set_json("contact", &serde_json::json!({}));
        assert_eq!(
            t.render(&sb, &mut v.scope(), clock).unwrap(),
            "#1 is on its way."
        );
        assert!(Template::compile(&sb, "[[ nothing to leave out ]]").is_err());
        assert!(Template::compile(&sb, "[[ {{order.name}}").is_err());
    }

    #[test]
    fn unclosed_and_broken_expressions_point_inside_the_text() {
        let sb = sandbox();
        let e = Template::compile(&sb, "Hi {{contact.name").unwrap_err();
        assert_eq!(e.offset, 3);
        let e = Template::compile(&sb, "Hi {{ customer.name }}").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(e.message.contains("customer"), "{}", e.message);
    }
}
