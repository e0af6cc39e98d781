//! A rule pack as an ops manager (or a stranger with an upload token) could write it: loading
//! and validating never panics, and an accepted pack classifies and decides without panicking.
//! The input is split into files at lines `--- FILE name`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_rules::load::SourceFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut files = Vec::new();
    let mut name = "pack.yaml".to_string();
    let mut body = String::new();
    for line in text.split_inclusive('\n') {
        if let Some(n) = line.strip_prefix("--- FILE ") {
            files.push((std::mem::take(&mut name), std::mem::take(&mut body)));
            name = n.trim().to_string();
        } else {
            body.push_str(line);
        }
    }
    files.push((name, body));
    let files = files
        .into_iter()
        .map(|(rel, text)| SourceFile {
            display: format!("fuzz/{rel}"),
            rel,
            text,
        })
        .collect();
    let loaded = switchyard_rules::load_files(files, "fuzz");
    if let Some(pack) = loaded.accepted(false) {
        let (c, _) =
            pack.classify("where is my order #1234? cancel it, ammi ka number 03001234567");
        assert!(
            (0.0..=1.0).contains(&c.confidence),
            "confidence {} outside 0–1",
            c.confidence
        );
        let _ = pack.message_vars("hello", chrono::Utc::now());
    }
});
