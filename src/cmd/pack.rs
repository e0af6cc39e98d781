//! `validate`, `classify` (and `--eval`), `test`, `schema`: the rule pack's commands.

use super::*;

pub(crate) fn load(dir: &Path) -> Result<Loaded> {
    load_dir(dir).with_context(|| format!("cannot read the rule pack at {}", dir.display()))
}

pub(crate) fn print_diagnostics(l: &Loaded, out: &mut impl Write) -> std::io::Result<()> {
    for d in &l.diagnostics.items {
        writeln!(out, "{d}")?;
    }
    Ok(())
}

/// `1 error`, `2 errors`.
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

pub(crate) fn validate(dir: &Path, deny_warnings: bool, explain: bool) -> Result<ExitCode> {
    let l = load(dir)?;
    let mut out = std::io::stdout().lock();
    print_diagnostics(&l, &mut out)?;
    let errors = l.diagnostics.errors().count();
    let warnings = l.diagnostics.warnings().count();
    match l.accepted(deny_warnings) {
        Some(p) => {
            writeln!(
                out,
                "{}: valid ({}, {}, {}, {}, {}; {}; version {})",
                dir.display(),
                count(p.files.len(), "file"),
                count(p.classifier.intent_names().count(), "intent"),
                count(p.rules.len(), "rule"),
                count(p.flows.len(), "flow"),
                count(p.tests.len(), "test"),
                count(warnings, "warning"),
                &p.hash[..12],
            )?;
            if explain {
                writeln!(
                    out,
                    "\nRules, in the order they run for an event (files sorted by path, then in file order;\nevery rule whose `if` holds runs, until one with `stop`):"
                )?;
                let w = p.rules.iter().map(|r| r.origin.len()).max().unwrap_or(0);
                for (i, r) in p.rules.iter().enumerate() {
                    writeln!(
                        out,
                        "{:>3}. {:<w$}  {}  [{}{}]",
                        i + 1,
                        r.origin,
                        r.name,
                        r.when,
                        if r.stop { ", stop" } else { "" },
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let why = if errors == 0 {
                " (--deny-warnings)"
            } else {
                ""
            };
            writeln!(
                out,
                "{}: invalid: {}, {}{why}",
                dir.display(),
                count(errors, "error"),
                count(warnings, "warning"),
            )?;
            Ok(ExitCode::from(1))
        }
    }
}

/// Loads a pack for commands that need a valid one; prints its problems on stderr otherwise.
pub(crate) fn valid_pack(dir: &Path) -> Result<Option<Pack>> {
    let l = load(dir)?;
    if l.pack.is_none() {
        print_diagnostics(&l, &mut std::io::stderr().lock())?;
        eprintln!(
            "{}: invalid; run `switchyard validate {}`",
            dir.display(),
            dir.display()
        );
    }
    Ok(l.pack)
}

pub(crate) fn classify(dir: &Path) -> Result<ExitCode> {
    let Some(pack) = valid_pack(dir)? else {
        return Ok(ExitCode::from(1));
    };
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lines() {
        let line = line.context("reading stdin")?;
        let (c, entities) = pack.classify(&line);
        let v = serde_json::json!({
            "text": line,
            "intent": c.intent,
            "confidence": (c.confidence as f64 * 1000.0).round() / 1000.0,
            "best": c.best,
            "clarify": c.clarify.map(|(a, b)| [a, b]),
            "entities": entities,
        });
        writeln!(out, "{v}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn eval_cmd(dir: &Path, file: &Path, min_accuracy: Option<f64>) -> Result<ExitCode> {
    let Some(pack) = valid_pack(dir)? else {
        return Ok(ExitCode::from(1));
    };
    let mut rdr =
        csv::Reader::from_path(file).with_context(|| format!("cannot read {}", file.display()))?;
    let headers = rdr.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(ti), Some(ii)) = (col("text"), col("intent")) else {
        anyhow::bail!(
            "{}: needs the columns `text` and `intent` (and, optionally, `language`)",
            file.display()
        );
    };
    let li = col("language");
    let mut labelled = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", file.display(), n + 2))?;
        let field = |i: usize| rec.get(i).unwrap_or("").to_string();
        labelled.push(switchyard_rules::eval::Labelled {
            text: field(ti),
            intent: field(ii),
            language: li.map(field),
        });
    }
    if labelled.is_empty() {
        anyhow::bail!("{}: no rows", file.display());
    }
    let ev = switchyard_rules::eval::evaluate(&pack, labelled);
    let mut out = std::io::stdout().lock();
    for want in &ev.unknown_labels {
        writeln!(
            out,
            "note: the pack has no intent `{want}`; those rows can only be wrong"
        )?;
    }
    let accuracy = ev.accuracy();
    writeln!(
        out,
        "accuracy: {:.3} ({}/{})",
        accuracy,
        ev.correct(),
        ev.rows.len()
    )?;
    writeln!(
        out,
        "\n{:<18} {:>9} {:>7} {:>8}",
        "intent", "precision", "recall", "support"
    )?;
    for s in ev.per_intent() {
        writeln!(
            out,
            "{:<18} {:>9.2} {:>7.2} {:>8}",
            s.intent, s.precision, s.recall, s.support
        )?;
    }
    let wrong = ev.confident_wrong();
    writeln!(
        out,
        "\nconfident-wrong: {:.3} ({}/{}): a wrong intent at or above intent_threshold {}, which the bot would act on",
        ev.confident_wrong_rate(),
        wrong.len(),
        ev.rows.len(),
        ev.threshold
    )?;
    for (t, w, g, c) in &wrong {
        writeln!(out, "  {w} → {g} ({c:.2}): {t:?}")?;
    }
    if let Some(acc) = ev.language_accuracy() {
        let right = ev.languages.iter().filter(|(_, w, g)| w == g).count();
        writeln!(out, "\nlanguage: {acc:.3} ({right}/{})", ev.languages.len())?;
        for (t, w, g) in ev.languages.iter().filter(|(_, w, g)| w != g) {
            writeln!(out, "  {w} → {g}: {t:?}")?;
        }
    }
    let confusions = ev.confusions();
    if !confusions.is_empty() {
        writeln!(out, "\nconfusions (expected → got: messages):")?;
        for ((w, g), texts) in confusions {
            writeln!(out, "  {w} → {g} ({}):", texts.len())?;
            for t in texts {
                writeln!(out, "    {t:?}")?;
            }
        }
        writeln!(
            out,
            "\nTo improve: add examples like these, in the customers' own words, to the expected intents; \
             or adjust settings.intent_threshold ({}).",
            pack.settings.intent_threshold
        )?;
    }
    match min_accuracy {
        Some(min) if accuracy < min => {
            writeln!(
                out,
                "\naccuracy {accuracy:.3} is below --min-accuracy {min}"
            )?;
            Ok(ExitCode::from(1))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// What a decision trace shows was exercised, as keys of [`Pack::origins`].
fn exercised(t: &switchyard_engine::trace::Trace, into: &mut std::collections::BTreeSet<String>) {
    use switchyard_engine::trace::Step;
    if let Some(i) = &t.intent {
        into.insert(format!("intent:{}", i.intent));
    }
    for s in &t.steps {
        let key = match s {
            Step::Rule {
                rule,
                matched: true,
                ..
            } => format!("rule:{rule}"),
            Step::StepEntered { flow, step } => format!("step:{flow}/{step}"),
            Step::Answered { flow, step, answer } => format!("on:{flow}/{step}/{answer}"),
            Step::Branch {
                flow,
                step,
                arm,
                failed: None,
            } => format!("branch:{flow}/{step}/{arm}"),
            Step::Send {
                template: Some(t), ..
            } => format!("template:{t}"),
            Step::TemplateFailed { template, .. } => format!("template:{template}"),
            _ => continue,
        };
        into.insert(key);
    }
}

pub(crate) fn test_cmd(
    dir: &Path,
    filter: Option<&str>,
    coverage: bool,
    min_coverage: Option<u8>,
) -> Result<ExitCode> {
    let mut seen = std::collections::BTreeSet::new();
    let Some(pack) = valid_pack(dir)? else {
        return Ok(ExitCode::from(1));
    };
    // The pack's connectors build HTTP clients (never called in tests).
    switchyard_connectors::cloud_api::install_tls();
    let pack = std::sync::Arc::new(pack);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout().lock();
    let (mut passed, mut failed) = (0, 0);
    for case in pack
        .tests
        .iter()
        .filter(|c| filter.is_none_or(|f| c.name.value.contains(f)))
    {
        // A case's fixtures are its store; without any, the pack's connectors as `serve` has
        // them with no credentials (e.g. a `static` store's file).
        let fx = &case.fixtures;
        let lookup: Arc<dyn switchyard_engine::ports::Lookup> =
            if fx.orders.is_empty() && fx.unavailable.is_empty() && fx.understood.is_empty() {
                switchyard_connectors::assemble::assemble(&pack, dir, |_| None)?.lookup
            } else {
                let failing = fx
                    .unavailable
                    .iter()
                    .filter_map(|a| switchyard_rules::pack::LookupAction::parse(&a.value))
                    .collect();
                Arc::new(
                    switchyard_connectors::demo::DemoStore::new(fx.orders.clone())
                        .failing(failing)
                        .understanding(fx.understood.clone()),
                )
            };
        let report = rt
            .block_on(switchyard_engine::testing::run_case(
                pack.clone(),
                case,
                lookup,
            ))
            .with_context(|| format!("test `{}` could not run", case.name.value))?;
        for t in &report.traces {
            exercised(t, &mut seen);
        }
        if report.passed() {
            passed += 1;
            writeln!(out, "ok      {}", report.name)?;
        } else {
            failed += 1;
            writeln!(out, "FAILED  {}", report.name)?;
            for f in &report.failures {
                writeln!(out, "    {f}")?;
            }
            writeln!(out, "  conversation:")?;
            for l in &report.transcript {
                writeln!(out, "    {l}")?;
            }
            writeln!(out, "  decision trace:")?;
            for t in &report.traces {
                writeln!(out, "    {t}")?;
            }
        }
    }
    let mut below = false;
    if coverage {
        let total = pack.origins.len();
        let missed: Vec<(&String, &String)> = pack
            .origins
            .iter()
            .filter(|(k, _)| !seen.contains(*k))
            .map(|(k, at)| (at, k))
            .collect();
        let pct = if total == 0 {
            100.0
        } else {
            100.0 * (total - missed.len()) as f64 / total as f64
        };
        writeln!(
            out,
            "coverage: {pct:.1}% ({} of {total} rules, flow steps and their arms, templates and intents exercised)",
            total - missed.len()
        )?;
        let mut missed = missed;
        // By file, then line and column as numbers.
        let place = |at: &str| {
            let mut p = at.rsplitn(3, ':');
            let col = p.next().and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
            let line = p.next().and_then(|l| l.parse::<u32>().ok()).unwrap_or(0);
            (p.next().unwrap_or("").to_string(), line, col)
        };
        missed.sort_by_key(|(at, k)| (place(at), (*k).clone()));
        for (at, key) in missed {
            let (kind, name) = key.split_once(':').unwrap_or(("", key));
            let kind = match kind {
                "on" => "answer",
                "branch" => "branch arm",
                k => k,
            };
            writeln!(out, "  not exercised: {at}: {kind} `{name}`")?;
        }
        if let Some(min) = min_coverage {
            if pct + 1e-9 < f64::from(min) {
                below = true;
                writeln!(out, "coverage {pct:.1}% is below --min-coverage {min}%")?;
            }
        }
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok(if failed == 0 && !below {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn schema() -> Result<ExitCode> {
    let s = serde_json::to_string_pretty(&switchyard_rules::json_schema())?;
    println!("{s}");
    Ok(ExitCode::SUCCESS)
}
