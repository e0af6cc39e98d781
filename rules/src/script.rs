//! The Rhai sandbox: one engine per pack, built from `Engine::new_raw()` with only the
//! packages conditions need, explicit limits, strict variables, no modules and no `eval`.
//! Scripts are compiled once at load on the engine that later evaluates them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicIteratorPackage, BasicMapPackage, BasicMathPackage,
    BasicStringPackage, LanguageCorePackage, LogicPackage, MoreStringPackage, Package,
};
use rhai::{Dynamic, Engine, Scope, AST};

use crate::calendar::CalendarRt;

/// Limits every script runs under. A script that exceeds one fails with [`ScriptError::Limit`].
pub const MAX_OPERATIONS: u64 = 50_000;
pub const MAX_CALL_LEVELS: usize = 16;
pub const MAX_EXPR_DEPTH: usize = 32;
/// In bytes: above the longest text any channel takes (WhatsApp: 65,536 characters of up to
/// 4 bytes each), so a customer's message never fails a rule for its length; well below what
/// would let a script exhaust memory.
pub const MAX_STRING_SIZE: usize = 256 * 1024;
pub const MAX_ARRAY_SIZE: usize = 1_000;
pub const MAX_MAP_SIZE: usize = 500;

/// `settings.values`: expression → value → `(language or "text", words)`.
pub type Values = BTreeMap<String, BTreeMap<String, Vec<(String, String)>>>;

/// The names every script and template may use (DESIGN.md §4).
pub const SCOPE_NAMES: &[&str] = &[
    "message",
    "intent",
    "confidence",
    "entities",
    "contact",
    "conversation",
    "order",
    "orders",
    "ticket",
    "sla",
    "event",
    "stats",
    "handoff",
    "clarify",
    "now",
];

/// The fields of the scope objects whose shape the engine fixes. A script that names another
/// field of one reads nothing at run time (`{{ticket.idd}}` renders empty), so validation
/// refuses it. `contact`, `order`, `event`, `entities` and `stats` carry what the pack's data
/// and connectors give them, and are not checked.
pub const KNOWN_FIELDS: &[(&str, &[&str])] = &[
    (
        "ticket",
        &[
            "id", "title", "category", "priority", "status", "owner", "queue",
        ],
    ),
    (
        "conversation",
        &[
            "id",
            "channel",
            "status",
            "queue",
            "assignee",
            "priority",
            "tags",
            "attributes",
            "flow",
            "step",
        ],
    ),
    (
        "message",
        &["text", "kind", "choice", "language", "closing", "question"],
    ),
    ("handoff", &["reason", "opens_at", "opens_on"]),
    ("clarify", &["first", "second", "intents"]),
    (
        "sla",
        &["kind", "due_at", "late_s", "owner", "queue", "breaches"],
    ),
];

/// `(object, field)` for every `object.field` of a compiled script whose object has a fixed
/// shape ([`KNOWN_FIELDS`]) and no such field.
pub fn unknown_fields(ast: &AST) -> Vec<(&'static str, String)> {
    use rhai::{ASTNode, Expr};
    let mut out = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::Dot(x, ..))) = path.last() {
            if let (Expr::Variable(v, ..), Expr::Property(p, ..)) = (&x.lhs, &x.rhs) {
                if let Some((obj, fields)) = KNOWN_FIELDS.iter().find(|(o, _)| *o == v.1.as_str()) {
                    if !fields.contains(&p.2.as_str()) {
                        out.push((*obj, p.2.to_string()));
                    }
                }
            }
        }
        true
    });
    out
}

/// The methods a script calls on values (`contact.phone.starts_with(…)`): a name the sandbox
/// has no function for fails every time the script runs.
pub fn method_calls(ast: &AST) -> Vec<String> {
    use rhai::{ASTNode, Expr};
    let mut out = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::MethodCall(call, _))) = path.last() {
            out.push(call.name.to_string());
        }
        true
    });
    out
}

/// String literals a script compares (`==`, `!=`) with a field: `("conversation.queue",
/// "complaint")`, for the validator to check against the pack's names and the closed sets.
pub fn compared_literals(ast: &AST) -> Vec<(String, String)> {
    use rhai::{ASTNode, Expr};
    fn field(e: &Expr) -> Option<String> {
        match e {
            Expr::Dot(d, ..) => match (&d.lhs, &d.rhs) {
                (Expr::Variable(v, ..), Expr::Property(p, ..)) => Some(format!("{}.{}", v.1, p.2)),
                _ => None,
            },
            Expr::Variable(v, ..) => Some(v.1.to_string()),
            _ => None,
        }
    }
    let mut out = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        // A comparison is an expression, or a statement when it is the whole script.
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, _))) => Some(call),
            Some(ASTNode::Stmt(rhai::Stmt::FnCall(call, _))) => Some(call),
            _ => None,
        };
        if let Some(call) = call {
            if (call.name == "==" || call.name == "!=") && call.args.len() == 2 {
                let pair = match (&call.args[0], &call.args[1]) {
                    (x, Expr::StringConstant(s, _)) | (Expr::StringConstant(s, _), x) => {
                        field(x).map(|f| (f, s.to_string()))
                    }
                    _ => None,
                };
                out.extend(pair);
            }
        }
        true
    });
    out
}

/// The scope names a script assigns to (`intent = "x"`, `contact.name = …`): they are
/// read-only, so the assignment fails every time the script runs — usually a `=` meant as `==`.
pub fn assigned_scope_names(ast: &AST) -> Vec<String> {
    use rhai::{ASTNode, Expr, Stmt};
    fn root(e: &Expr) -> Option<&str> {
        match e {
            Expr::Variable(v, ..) => Some(v.1.as_str()),
            Expr::Dot(x, ..) | Expr::Index(x, ..) => root(&x.lhs),
            _ => None,
        }
    }
    let mut out = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Assignment(x))) = path.last() {
            if let Some(name) = root(&x.1.lhs).filter(|n| SCOPE_NAMES.contains(n)) {
                out.push(name.to_string());
            }
        }
        true
    });
    out
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ScriptError {
    /// A sandbox limit was hit (operations, sizes, depth).
    #[error("script stopped by the sandbox: {0}")]
    Limit(String),
    #[error("script failed: {0}")]
    Runtime(String),
    #[error("condition returned {0}, expected true or false")]
    NotBool(String),
}

/// A compile error with its position inside the script (1-based).
#[derive(Debug, Clone)]
pub struct CompileError {
    pub message: String,
    pub line: usize,
    pub col: usize,
}

/// What the helper functions see while a script runs. Set around each evaluation on the
/// current thread, so registered functions stay pure functions of their inputs.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: DateTime<Utc>,
    /// Whether the customer wrote within the last 24 hours (WhatsApp's service window).
    pub window_open: bool,
}

thread_local! {
    static CLOCK: RefCell<Option<Clock>> = const { RefCell::new(None) };
}

/// The values scripts see. The engine fills them from the event and the conversation.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub values: Vec<(String, Dynamic)>,
}

impl Vars {
    /// Every scope name, set to `()` (a map for the map-like ones).
    pub fn empty() -> Vars {
        let mut v = Vars::default();
        for n in SCOPE_NAMES {
            let d = match *n {
                "intent" => Dynamic::from("unknown"),
                "confidence" => Dynamic::from(0.0_f64),
                "now" => Dynamic::from(""),
                "order" | "ticket" => Dynamic::UNIT,
                "orders" => Dynamic::from_array(vec![]),
                _ => Dynamic::from_map(Default::default()),
            };
            v.values.push((n.to_string(), d));
        }
        v
    }

    pub fn set(&mut self, name: &str, value: Dynamic) {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name.to_string(), value)),
        }
    }

    pub fn set_json(&mut self, name: &str, value: &serde_json::Value) {
        self.set(name, json_to_dynamic(value));
    }

    pub fn get(&self, name: &str) -> Option<&Dynamic> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A scope holding every value as a constant (scripts cannot change what they read).
    pub fn scope(&self) -> Scope<'static> {
        let mut s = Scope::new();
        for (n, v) in &self.values {
            s.push_constant_dynamic(n.clone(), v.clone());
        }
        s
    }
}

/// Converts JSON to a Rhai value (objects become maps, integers stay integers).
pub fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    use serde_json::Value as J;
    match v {
        J::Null => Dynamic::UNIT,
        J::Bool(b) => Dynamic::from(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from(i),
            None => Dynamic::from(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Dynamic::from(s.clone()),
        J::Array(a) => Dynamic::from_array(a.iter().map(json_to_dynamic).collect()),
        J::Object(o) => {
            let mut m = rhai::Map::new();
            for (k, v) in o {
                m.insert(k.as_str().into(), json_to_dynamic(v));
            }
            Dynamic::from_map(m)
        }
    }
}

/// Converts a Rhai value back to JSON (for `set` attributes and traces).
pub fn dynamic_to_json(v: &Dynamic) -> serde_json::Value {
    use serde_json::Value as J;
    if v.is_unit() {
        J::Null
    } else if let Ok(b) = v.as_bool() {
        J::Bool(b)
    } else if let Ok(i) = v.as_int() {
        J::from(i)
    } else if let Ok(f) = v.as_float() {
        serde_json::Number::from_f64(f)
            .map(J::Number)
            .unwrap_or(J::Null)
    } else if v.is_string() {
        J::String(v.clone().into_string().unwrap_or_default())
    } else if v.is_array() {
        J::Array(
            v.clone()
                .into_array()
                .unwrap_or_default()
                .iter()
                .map(dynamic_to_json)
                .collect(),
        )
    } else if v.is_map() {
        let m = v.clone().cast::<rhai::Map>();
        J::Object(
            m.iter()
                .map(|(k, v)| (k.to_string(), dynamic_to_json(v)))
                .collect(),
        )
    } else {
        J::String(v.to_string())
    }
}

/// Text of a value as templates show it: `()` is empty, whole floats lose their `.0`.
pub fn display(v: &Dynamic) -> String {
    if v.is_unit() {
        String::new()
    } else if let Ok(f) = v.as_float() {
        if f.fract() == 0.0 && f.abs() < 1e15 {
            format!("{}", f as i64)
        } else {
            format!("{f}")
        }
    } else {
        v.to_string()
    }
}

/// The pack's sandboxed engine.
pub struct Sandbox {
    engine: Engine,
    /// What values mean in each language, by the expression that shows them
    /// (`settings.values`: `order.status` → `dispatched` → `ur` → "روانہ ہو چکا").
    values: Values,
    /// The pack's default language: the last resort for a value's words.
    default_language: String,
    /// The names of every function scripts can call (the packages' and ours).
    functions: std::collections::BTreeSet<String>,
    /// Extra scope names a pack declares (`lookup: { as: NAME }`).
    extra_names: Vec<String>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sandbox")
    }
}

impl Sandbox {
    pub fn new(calendars: Arc<BTreeMap<String, CalendarRt>>, extra_names: Vec<String>) -> Sandbox {
        let mut engine = Engine::new_raw();
        for p in [
            LanguageCorePackage::new().as_shared_module(),
            ArithmeticPackage::new().as_shared_module(),
            BasicIteratorPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicStringPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(p);
        }
        engine
            .set_max_operations(MAX_OPERATIONS)
            .set_max_call_levels(MAX_CALL_LEVELS)
            .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_EXPR_DEPTH)
            .set_max_string_size(MAX_STRING_SIZE)
            .set_max_array_size(MAX_ARRAY_SIZE)
            .set_max_map_size(MAX_MAP_SIZE)
            .set_max_variables(64)
            .set_max_functions(16)
            .set_strict_variables(true)
            .set_allow_looping(true)
            .set_optimization_level(rhai::OptimizationLevel::Simple);
        engine.disable_symbol("eval");
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});

        let cals = calendars.clone();
        engine.register_fn(
            "in_calendar",
            move |name: &str| -> Result<bool, Box<rhai::EvalAltResult>> {
                let cal = cals
                    .get(name)
                    .ok_or_else(|| format!("no calendar named `{name}`"))?;
                let now = CLOCK
                    .with(|c| c.borrow().map(|c| c.now))
                    .unwrap_or_else(Utc::now);
                Ok(cal.is_open(now))
            },
        );
        // Whether two phone numbers are the same line, however they are written
        // (`0300-1234567`, `+92 300 1234567`, `923001234567`): for rules that share an
        // order's details only with the phone it was placed from.
        engine.register_fn("same_phone", |a: Dynamic, b: Dynamic| -> bool {
            match (a.into_immutable_string(), b.into_immutable_string()) {
                (Ok(a), Ok(b)) => matches!(
                    (canonical_phone(&a), canonical_phone(&b)),
                    (Some(x), Some(y)) if x == y
                ),
                _ => false,
            }
        });
        engine.register_fn("within_window", || -> bool {
            CLOCK
                .with(|c| c.borrow().map(|c| c.window_open))
                .unwrap_or(false)
        });
        let functions = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|s| s.split('(').next())
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        Sandbox {
            engine,
            functions,
            extra_names,
            values: Values::new(),
            default_language: "en".into(),
        }
    }

    /// With the pack's `settings.values` (what values mean in each language) and its default
    /// language.
    pub fn with_values(mut self, values: Values, default_language: &str) -> Sandbox {
        self.values = values;
        self.default_language = default_language.to_string();
        self
    }

    /// Whether the values an expression shows have words per language (`settings.values`).
    pub fn has_values(&self, expr: &str) -> bool {
        self.values.contains_key(expr)
    }

    /// `shown` (what the expression `expr` gave) in the words of `language` — its fallbacks,
    /// `text`, the default language — when `settings.values` has them; else as it is.
    pub fn value_words(&self, expr: &str, shown: String, language: Option<&str>) -> String {
        let Some(words) = self.values.get(expr).and_then(|v| v.get(&shown)) else {
            return shown;
        };
        let chain = language
            .into_iter()
            .chain(
                language
                    .map_or(&[][..], crate::lang::default_fallbacks)
                    .iter()
                    .copied(),
            )
            .chain(["text", self.default_language.as_str()]);
        for l in chain {
            if let Some((_, w)) = words.iter().find(|(k, _)| k == l) {
                return w.clone();
            }
        }
        shown
    }

    /// Whether scripts can call a function or method of this name.
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains(name)
    }

    /// The names of the functions scripts can call (for "did you mean").
    pub fn function_names(&self) -> impl Iterator<Item = &str> {
        self.functions.iter().map(String::as_str).filter(|n| {
            n.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && !n.contains('$')
        })
    }

    /// The names `lookup … as:` adds to the scope.
    pub fn extra_names(&self) -> &[String] {
        &self.extra_names
    }

    fn compile_scope(&self, local: &[&str]) -> Scope<'static> {
        let mut s = Scope::new();
        // Plain variables (not constants): the optimiser must not fold placeholder values in.
        for n in SCOPE_NAMES.iter().chain(local) {
            s.push_dynamic(*n, Dynamic::UNIT);
        }
        for n in &self.extra_names {
            s.push_dynamic(n.clone(), Dynamic::UNIT);
        }
        s
    }

    /// Compiles a script (a condition or a `by:`/`value:` expression; statements allowed).
    pub fn compile(&self, src: &str) -> Result<AST, CompileError> {
        self.engine
            .compile_with_scope(&self.compile_scope(&[]), src)
            .map_err(compile_error)
    }

    /// Compiles one expression (the inside of a template's `{{ }}`); `local` are names only
    /// this expression sees (a list row's `item`).
    pub fn compile_expression(&self, src: &str, local: &[&str]) -> Result<AST, CompileError> {
        self.engine
            .compile_expression_with_scope(&self.compile_scope(local), src)
            .map_err(compile_error)
    }

    /// Evaluates a compiled script against `scope` (see [`Vars::scope`]). Variables a script
    /// declares are dropped afterwards, so one scope serves many evaluations.
    pub fn eval(
        &self,
        ast: &AST,
        scope: &mut Scope<'static>,
        clock: Clock,
    ) -> Result<Dynamic, ScriptError> {
        let len = scope.len();
        CLOCK.with(|c| *c.borrow_mut() = Some(clock));
        let r = self.engine.eval_ast_with_scope::<Dynamic>(scope, ast);
        CLOCK.with(|c| *c.borrow_mut() = None);
        scope.rewind(len);
        r.map_err(|e| classify_error(*e))
    }

    /// Evaluates a condition: it must return a boolean.
    pub fn eval_bool(
        &self,
        ast: &AST,
        scope: &mut Scope<'static>,
        clock: Clock,
    ) -> Result<bool, ScriptError> {
        let v = self.eval(ast, scope, clock)?;
        v.as_bool().map_err(|t| ScriptError::NotBool(t.to_string()))
    }
}

fn compile_error(e: rhai::ParseError) -> CompileError {
    let p = e.position();
    CompileError {
        message: e.err_type().to_string(),
        line: p.line().unwrap_or(1),
        col: p.position().unwrap_or(1),
    }
}

fn classify_error(e: rhai::EvalAltResult) -> ScriptError {
    use rhai::EvalAltResult as E;
    match e {
        E::ErrorTooManyOperations(_)
        | E::ErrorDataTooLarge(..)
        | E::ErrorStackOverflow(_)
        | E::ErrorTooManyVariables(_)
        | E::ErrorTerminated(..) => ScriptError::Limit(e.to_string()),
        other => ScriptError::Runtime(other.to_string()),
    }
}

/// A phone number in one form: E.164 for a Pakistani mobile, else its digits (at least 8).
fn canonical_phone(s: &str) -> Option<String> {
    if let Some(p) = crate::entities::phone_pk(s) {
        return Some(p);
    }
    let digits: String = crate::entities::ascii_digits(s)
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    (digits.len() >= 8).then_some(digits)
}

#[cfg(test)]
mod constant_scope_tests {
    use super::*;

    #[test]
    fn scripts_cannot_change_what_they_read_and_copies_are_their_own() {
        let sb = Sandbox::new(Default::default(), vec![]);
        let mut v = Vars::empty();
        v.set_json(
            "order",
            &serde_json::json!({ "status": "pending", "items": [1, 2] }),
        );
        let clock = Clock {
            now: chrono::Utc::now(),
            window_open: true,
        };
        let run = |src: &str, v: &Vars| {
            let ast = sb.compile(src).unwrap();
            sb.eval(&ast, &mut v.scope(), clock)
                .map(|d| dynamic_to_json(&d))
        };
        assert!(run(r#"order.status = "paid""#, &v).is_err());
        assert!(run("order.items.push(3)", &v).is_err());
        assert_eq!(
            run(r#"let o = order; o.status = "paid"; o.status"#, &v).unwrap(),
            serde_json::json!("paid")
        );
        assert_eq!(
            run("order.status", &v).unwrap(),
            serde_json::json!("pending")
        );
        assert_eq!(run("order.items.len()", &v).unwrap(), serde_json::json!(2));
        assert_eq!(
            dynamic_to_json(v.get("order").unwrap()),
            serde_json::json!({ "status": "pending", "items": [1, 2] })
        );
    }
}
