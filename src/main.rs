//! `switchyard`: the command line. It wires the library crates together; no business logic
//! lives here. Exit codes: 0 ok, 1 validation or test failure, 2 usage or I/O error.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use switchyard_rules::{load_dir, Loaded, Pack, UNKNOWN};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "WhatsApp-first customer support engine for ecommerce"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a rule pack: prints every problem as `file:line:col`; exit 0 valid, 1 invalid.
    Validate {
        /// The pack directory.
        dir: PathBuf,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Classify messages with a pack: one message a line on stdin, one JSON line out each.
    Classify {
        /// The pack directory.
        #[arg(long)]
        rules: PathBuf,
        /// Measure instead: a CSV with columns `text,intent` (`other` or `unknown` for none).
        #[arg(long)]
        eval: Option<PathBuf>,
        /// With --eval: exit 1 when accuracy is below this (e.g. 0.9), for CI.
        #[arg(long, requires = "eval")]
        min_accuracy: Option<f64>,
    },
    /// Run a pack's tests through the real pipeline; prints each and `N passed, M failed`.
    Test {
        /// The pack directory.
        dir: PathBuf,
        /// Only the tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Print the JSON Schema of rule-pack files (for editor autocompletion).
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Validate { dir, deny_warnings } => validate(&dir, deny_warnings),
        Command::Classify {
            rules,
            eval,
            min_accuracy,
        } => match eval {
            Some(file) => eval_cmd(&rules, &file, min_accuracy),
            None => classify(&rules),
        },
        Command::Test { dir, filter } => test_cmd(&dir, filter.as_deref()),
        Command::Schema => schema(),
    };
    match r {
        Ok(code) => code,
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(dir: &Path) -> Result<Loaded> {
    load_dir(dir).with_context(|| format!("cannot read the rule pack at {}", dir.display()))
}

fn print_diagnostics(l: &Loaded, out: &mut impl Write) -> std::io::Result<()> {
    for d in &l.diagnostics.items {
        writeln!(out, "{d}")?;
    }
    Ok(())
}

fn validate(dir: &Path, deny_warnings: bool) -> Result<ExitCode> {
    let l = load(dir)?;
    let mut out = std::io::stdout().lock();
    print_diagnostics(&l, &mut out)?;
    let errors = l.diagnostics.errors().count();
    let warnings = l.diagnostics.warnings().count();
    match l.accepted(deny_warnings) {
        Some(p) => {
            writeln!(
                out,
                "{}: valid ({} files, {} intents, {} rules, {} flows, {} tests; {} warnings; version {})",
                dir.display(),
                p.files.len(),
                p.classifier.intent_names().count(),
                p.rules.len(),
                p.flows.len(),
                p.tests.len(),
                warnings,
                &p.hash[..12],
            )?;
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
                "{}: invalid: {errors} errors, {warnings} warnings{why}",
                dir.display()
            )?;
            Ok(ExitCode::from(1))
        }
    }
}

/// Loads a pack for commands that need a valid one; prints its problems on stderr otherwise.
fn valid_pack(dir: &Path) -> Result<Option<Pack>> {
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

fn classify(dir: &Path) -> Result<ExitCode> {
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
            "entities": entities,
        });
        writeln!(out, "{v}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Labels that mean "no intent" in an eval file.
fn expected_label(s: &str) -> String {
    match s.trim() {
        "other" | "none" | "" => UNKNOWN.to_string(),
        x => x.to_string(),
    }
}

fn eval_cmd(dir: &Path, file: &Path, min_accuracy: Option<f64>) -> Result<ExitCode> {
    let Some(pack) = valid_pack(dir)? else {
        return Ok(ExitCode::from(1));
    };
    let mut rdr =
        csv::Reader::from_path(file).with_context(|| format!("cannot read {}", file.display()))?;
    let headers = rdr.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(ti), Some(ii)) = (col("text"), col("intent")) else {
        anyhow::bail!("{}: needs the columns `text` and `intent`", file.display());
    };
    let mut rows = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", file.display(), n + 2))?;
        let text = rec.get(ti).unwrap_or("").to_string();
        let want = expected_label(rec.get(ii).unwrap_or(""));
        let got = pack.classifier.classify(&text);
        rows.push((text, want, got));
    }
    if rows.is_empty() {
        anyhow::bail!("{}: no rows", file.display());
    }
    let known: std::collections::BTreeSet<&str> = pack.classifier.intent_names().collect();
    let mut out = std::io::stdout().lock();
    for (_, want, _) in &rows {
        if want != UNKNOWN && !known.contains(want.as_str()) {
            writeln!(
                out,
                "note: the pack has no intent `{want}`; those rows can only be wrong"
            )?;
        }
    }
    let correct = rows.iter().filter(|(_, w, g)| *w == g.intent).count();
    let accuracy = correct as f64 / rows.len() as f64;
    writeln!(out, "accuracy: {:.3} ({correct}/{})", accuracy, rows.len())?;
    let mut labels: std::collections::BTreeSet<String> =
        rows.iter().map(|(_, w, _)| w.clone()).collect();
    labels.extend(rows.iter().map(|(_, _, g)| g.intent.clone()));
    writeln!(
        out,
        "\n{:<18} {:>9} {:>7} {:>8}",
        "intent", "precision", "recall", "support"
    )?;
    for l in &labels {
        let tp = rows
            .iter()
            .filter(|(_, w, g)| w == l && g.intent == *l)
            .count();
        let predicted = rows.iter().filter(|(_, _, g)| g.intent == *l).count();
        let support = rows.iter().filter(|(_, w, _)| w == l).count();
        let p = if predicted == 0 {
            0.0
        } else {
            tp as f64 / predicted as f64
        };
        let r = if support == 0 {
            0.0
        } else {
            tp as f64 / support as f64
        };
        writeln!(out, "{l:<18} {p:>9.2} {r:>7.2} {support:>8}")?;
    }
    let mut confusions: std::collections::BTreeMap<(String, String), Vec<&str>> =
        Default::default();
    for (t, w, g) in &rows {
        if *w != g.intent {
            confusions
                .entry((w.clone(), g.intent.clone()))
                .or_default()
                .push(t);
        }
    }
    if !confusions.is_empty() {
        writeln!(out, "\nconfusions (expected → got: messages):")?;
        let mut list: Vec<_> = confusions.into_iter().collect();
        list.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        for ((w, g), texts) in list {
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

fn test_cmd(dir: &Path, filter: Option<&str>) -> Result<ExitCode> {
    let Some(pack) = valid_pack(dir)? else {
        return Ok(ExitCode::from(1));
    };
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
        let lookup = std::sync::Arc::new(switchyard_connectors::demo::DemoStore::new(
            case.fixtures.orders.clone(),
        ));
        let report = rt
            .block_on(switchyard_engine::testing::run_case(
                pack.clone(),
                case,
                lookup,
            ))
            .with_context(|| format!("test `{}` could not run", case.name.value))?;
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
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn schema() -> Result<ExitCode> {
    let s = serde_json::to_string_pretty(&switchyard_rules::json_schema())?;
    println!("{s}");
    Ok(ExitCode::SUCCESS)
}
