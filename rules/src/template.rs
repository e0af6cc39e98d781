//! Templates: text with `{{ expr }}` holes, each a Rhai expression compiled at load.

use rhai::{Scope, AST};

use crate::script::{display, Clock, CompileError, Sandbox, ScriptError};

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Expr(AST),
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
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(a) => Some(a),
            Part::Lit(_) => None,
        })
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
            parts.push(Part::Expr(ast));
            let consumed = open + 2 + close + 2;
            base += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
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
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Expr(ast) => out.push_str(&display(&sandbox.eval(ast, scope, clock)?)),
            }
        }
        Ok(out)
    }
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
    fn unclosed_and_broken_expressions_point_inside_the_text() {
        let sb = sandbox();
        let e = Template::compile(&sb, "Hi {{contact.name").unwrap_err();
        assert_eq!(e.offset, 3);
        let e = Template::compile(&sb, "Hi {{ customer.name }}").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(e.message.contains("customer"), "{}", e.message);
    }
}
