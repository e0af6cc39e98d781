//! A message template and the data it is rendered with: compiling and rendering never panic;
//! text without `{{` renders as itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_rules::script::{Clock, Sandbox, Vars};
use switchyard_rules::template::Template;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Template source, then (after a NUL) the order it is rendered with, as JSON.
    let (src, order) = text.split_once('\0').unwrap_or((text, "{}"));
    let sandbox = Sandbox::new(Default::default(), vec![]);
    let Ok(t) = Template::compile(&sandbox, src) else {
        return;
    };
    let mut vars = Vars::empty();
    if let Ok(o) = serde_json::from_str::<serde_json::Value>(order) {
        vars.set_json("order", &o);
    }
    let clock = Clock {
        now: chrono::Utc::now(),
        window_open: true,
    };
    let out = t.render(&sandbox, &mut vars.scope(), clock);
    if !src.contains("{{") {
        assert_eq!(out.as_deref().ok(), Some(src));
    }
});
