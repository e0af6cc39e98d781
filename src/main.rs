//! `switchyard`: the command line. It wires the library crates together; no business logic
//! lives here. Exit codes: 0 ok, 1 validation or test failure, 2 usage or I/O error.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use switchyard_engine::model::now_millis as now_ms;
use switchyard_rules::{load_dir, Loaded, Pack, UNKNOWN};

mod config;
use config::{LogFormat, ServeArgs};

/// mimalloc: the pipeline allocates many small maps and strings per message from several
/// threads, where it is markedly faster than the system allocator (benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Apply the database migrations without serving (SQLite or PostgreSQL by the URL).
    Migrate {
        #[arg(long, env = "SWITCHYARD_DB", default_value = "sqlite://switchyard.db")]
        db: String,
    },
    /// Delete what only the machinery needed, older than a duration: processed inbox events,
    /// decision traces, done timers, finished outbox rows. Conversations, messages, notes,
    /// tickets and the audit stay. Safe while serving.
    Prune {
        /// At least 7d: the inbox is what recognises a webhook Meta delivers again (it retries
        /// for up to 7 days).
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        #[arg(long, env = "SWITCHYARD_DB", default_value = "sqlite://switchyard.db")]
        db: String,
    },
    /// Serve the webhooks (embedded SQLite, or PostgreSQL with `--db postgres://…`); outbound
    /// messages go to WhatsApp when configured, else to the sandbox (printed).
    Serve(Box<ServeArgs>),
    /// Post webhook payloads from a file (one JSON body per line) to a running server, signed
    /// when a secret is given; prints progress and a summary. Exits 1 if any was rejected.
    Replay {
        /// A JSONL file: one WhatsApp webhook body per line (blank lines are skipped).
        file: PathBuf,
        /// The webhook URL, e.g. http://127.0.0.1:8080/webhooks/whatsapp
        #[arg(long)]
        to: String,
        /// The app secret to sign each body with (`X-Hub-Signature-256`).
        #[arg(long, env = "WHATSAPP_APP_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Play sample conversations through the example pack on a fresh SQLite file, over HTTP.
    Demo {
        /// Keep serving afterwards, so you can go on with curl (the sandbox prints replies).
        #[arg(long)]
        keep_serving: bool,
        /// Where to serve with --keep-serving (otherwise a free port on loopback).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// API tokens: create one (shown once, stored hashed) or revoke one.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Talk to a pack as a customer in the terminal, on a temporary store: the bot's replies
    /// are printed, buttons and list rows as numbered choices (type the number to pick one).
    Chat {
        #[arg(long, default_value = "examples/pk-ecommerce")]
        rules: PathBuf,
        /// The customer's WhatsApp number.
        #[arg(long = "as", default_value = "923001234567")]
        customer: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token and prints it (the only time it is shown; only its hash is stored).
    Create {
        /// `agent`, `supervisor` or `admin`.
        #[arg(long)]
        role: String,
        /// The agent the token acts as (required for `agent`).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, env = "SWITCHYARD_DB", default_value = "sqlite://switchyard.db")]
        db: String,
    },
    /// Revokes a token by its id.
    Revoke {
        id: i64,
        #[arg(long, env = "SWITCHYARD_DB", default_value = "sqlite://switchyard.db")]
        db: String,
    },
}

fn migrate(db: &str) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        switchyard_engine::store::open(db)
            .await
            .with_context(|| format!("cannot migrate the database {db}"))?;
        println!("{db}: migrations applied");
        Ok(ExitCode::SUCCESS)
    })
}

fn prune(older_than: &str, db: &str) -> Result<ExitCode> {
    let age = switchyard_rules::calendar::parse_duration(older_than)
        .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
    if age < std::time::Duration::from_secs(7 * 86_400) {
        anyhow::bail!(
            "--older-than {older_than}: keep at least 7d (Meta redelivers webhooks for up to 7 days, and the inbox is what recognises them)"
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = switchyard_engine::store::open(db)
            .await
            .with_context(|| format!("cannot open the database {db}"))?;
        let before = now_ms() - age.as_millis() as i64;
        for (table, n) in store.prune(before).await? {
            println!("{table}: {n} rows deleted");
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn token_cmd(cmd: TokenCommand) -> Result<ExitCode> {
    use switchyard_api::admin::{new_token, token_hash, Role};
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let open = |db: String| async move {
            switchyard_engine::store::open(&db)
                .await
                .with_context(|| format!("cannot open the database {db}"))
        };
        match cmd {
            TokenCommand::Create { role, agent, db } => {
                let Some(role) = Role::parse(&role) else {
                    anyhow::bail!("--role: one of agent, supervisor, admin (not `{role}`)");
                };
                let agent = agent.filter(|a| !a.trim().is_empty());
                if role == Role::Agent && agent.is_none() {
                    anyhow::bail!("--agent: an agent token must name the agent it acts as");
                }
                let store = open(db).await?;
                let token = new_token().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let id = switchyard_engine::Store::create_token(
                    &*store,
                    &token_hash(&token),
                    role.as_str(),
                    agent.as_deref(),
                    "cli",
                    now_ms(),
                )
                .await?;
                println!("{token}");
                eprintln!(
                    "token {id} ({}{}) created; it is not shown again",
                    role.as_str(),
                    agent.map(|a| format!(", agent {a}")).unwrap_or_default()
                );
                Ok(ExitCode::SUCCESS)
            }
            TokenCommand::Revoke { id, db } => {
                let store = open(db).await?;
                if switchyard_engine::Store::revoke_token(&*store, id, "cli", now_ms()).await? {
                    eprintln!("token {id} revoked");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("no live token {id}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    })
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
        Command::Migrate { db } => migrate(&db),
        Command::Prune { older_than, db } => prune(&older_than, &db),
        Command::Serve(args) => serve(*args),
        Command::Replay {
            file,
            to,
            secret,
            concurrency,
        } => replay(&file, &to, secret.as_deref(), concurrency),
        Command::Demo {
            keep_serving,
            listen,
        } => demo(keep_serving, &listen),
        Command::Chat { rules, customer } => chat(&rules, &customer),
        Command::Token(cmd) => token_cmd(cmd),
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
        let lookup: Arc<dyn switchyard_engine::ports::Lookup> = if case.fixtures.orders.is_empty() {
            connectors(&pack, dir, |_| None)?.lookup
        } else {
            Arc::new(switchyard_connectors::demo::DemoStore::new(
                case.fixtures.orders.clone(),
            ))
        };
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

/// Orders for the demo store: every order in the pack's test fixtures.
fn sample_orders(pack: &Pack) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut seen = std::collections::BTreeSet::new();
    pack.tests
        .iter()
        .flat_map(|t| t.fixtures.orders.iter().cloned())
        .filter(|o| seen.insert(o.get("name").map(|n| n.to_string()).unwrap_or_default()))
        .collect()
}

/// The pack's connectors as the engine's ports, from the environment variables they name:
/// Shopify with its shop and token (else the demo store when `fallback: demo`), the demo
/// store, outbound webhooks with their URL and secret; and a sentence per connector for the
/// start-up message.
struct Connectors {
    lookup: Arc<dyn switchyard_engine::ports::Lookup>,
    notifier: Arc<dyn switchyard_engine::ports::Notifier>,
    /// One line per connector for the start-up message.
    said: Vec<String>,
}

fn connectors(pack: &Pack, dir: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Connectors> {
    use switchyard_connectors::shopify::{Shopify, ShopifyConfig, Stores};
    use switchyard_connectors::webhooks::{Endpoint, Target, Webhooks};
    use switchyard_engine::ports::Lookup;
    use switchyard_rules::pack::ConnectorRt;
    let demo: Arc<dyn Lookup> = Arc::new(switchyard_connectors::demo::DemoStore::new(
        sample_orders(pack),
    ));
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut stores: std::collections::HashMap<String, Result<Arc<dyn Lookup>, String>> =
        std::collections::HashMap::new();
    let mut hooks = std::collections::HashMap::new();
    let mut said = Vec::new();
    // Static and demo stores first: Shopify connectors may fall back to them.
    for (name, c) in pack.connectors.iter() {
        match c {
            ConnectorRt::Demo => {
                stores.insert(name.clone(), Ok(demo.clone()));
            }
            ConnectorRt::Static { file } => {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "the `{name}` connector's orders: cannot read {}",
                        path.display()
                    )
                })?;
                let orders: Vec<serde_json::Map<String, serde_json::Value>> =
                    serde_json::from_str(&text).with_context(|| {
                        format!("{}: expected a JSON array of orders", path.display())
                    })?;
                said.push(format!(
                    "`{name}`: {} orders from {}",
                    orders.len(),
                    path.display()
                ));
                stores.insert(
                    name.clone(),
                    Ok(Arc::new(switchyard_connectors::demo::DemoStore::new(
                        orders,
                    ))),
                );
            }
            _ => {}
        }
    }
    for (name, c) in pack.connectors.iter() {
        match c {
            ConnectorRt::Shopify {
                shop_env,
                token_env,
                api_version,
                fallback,
            } => {
                let store = match (set(shop_env), set(token_env), fallback.as_deref()) {
                    (Some(shop), Some(token), _) => {
                        let mut cfg = ShopifyConfig::new(&shop, &token);
                        if let Some(v) = api_version {
                            cfg.api_version = v.clone();
                        }
                        said.push(format!("`{name}`: Shopify {shop}"));
                        Ok(
                            Arc::new(Shopify::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?)
                                as Arc<dyn Lookup>,
                        )
                    }
                    (_, _, Some(fb)) => {
                        let (what, store) = match fb {
                            "demo" => ("the demo store".to_string(), Ok(demo.clone())),
                            other => (
                                format!("the `{other}` store"),
                                stores.get(other).cloned().unwrap_or_else(|| {
                                    Err(format!("no store connector `{other}`"))
                                }),
                            ),
                        };
                        said.push(format!(
                            "`{name}`: {what} (set {shop_env} and {token_env} for Shopify)"
                        ));
                        store
                    }
                    _ => {
                        said.push(format!(
                            "`{name}`: not configured (set {shop_env} and {token_env})"
                        ));
                        Err(format!(
                            "the store `{name}` has no credentials: set {shop_env} and {token_env}"
                        ))
                    }
                };
                stores.insert(name.clone(), store);
            }
            ConnectorRt::Webhook {
                url_env,
                secret_env,
            } => {
                let target = match set(url_env) {
                    Some(url) => Target::Http(Endpoint {
                        url,
                        secret: secret_env.as_deref().and_then(set),
                    }),
                    None => {
                        said.push(format!(
                            "`{name}`: webhook printed here (set {url_env} to post it)"
                        ));
                        Target::Print
                    }
                };
                hooks.insert(name.clone(), target);
            }
            ConnectorRt::Http(rt) => {
                let l = switchyard_connectors::http_lookup::HttpLookup::new(name, rt.clone(), &env)
                    .map(|l| Arc::new(l) as Arc<dyn Lookup>);
                if let Err(e) = &l {
                    said.push(format!("`{name}`: not configured ({e})"));
                }
                stores.insert(name.clone(), l);
            }
            ConnectorRt::Demo | ConnectorRt::Static { .. } => {}
        }
    }
    let notifier =
        Webhooks::new(hooks, std::time::Duration::from_secs(10)).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Connectors {
        lookup: Arc::new(Stores::new(stores)),
        notifier: Arc::new(notifier),
        said,
    })
}

async fn start_runtime(
    pack: Pack,
    db: &str,
    channel: Arc<dyn switchyard_engine::ports::Channel>,
    notifier: Arc<dyn switchyard_engine::ports::Notifier>,
    default_queues: &[(String, String)],
) -> Result<Arc<switchyard_engine::worker::Runtime>> {
    let lookup = Arc::new(switchyard_connectors::demo::DemoStore::new(sample_orders(
        &pack,
    )));
    start_runtime_with(
        pack,
        (db, Default::default()),
        channel,
        notifier,
        lookup,
        default_queues,
    )
    .await
}

async fn start_runtime_with(
    pack: Pack,
    (db, pg): (&str, switchyard_engine::store::postgres::PgSettings),
    channel: Arc<dyn switchyard_engine::ports::Channel>,
    notifier: Arc<dyn switchyard_engine::ports::Notifier>,
    lookup: Arc<dyn switchyard_engine::ports::Lookup>,
    default_queues: &[(String, String)],
) -> Result<Arc<switchyard_engine::worker::Runtime>> {
    let store = switchyard_engine::store::open_with(db, pg)
        .await
        .with_context(|| format!("cannot open the database {db}"))?;
    let mut engine = switchyard_engine::Engine::new(store, Arc::new(pack), lookup);
    for (channel, queue) in default_queues {
        engine = engine.with_default_queue(channel, queue);
    }
    let engine = Arc::new(engine);
    let rt =
        switchyard_engine::worker::Runtime::start(engine, channel, notifier, Default::default())
            .await?;
    Ok(Arc::new(rt))
}

/// The outbound side of `serve`: each WhatsApp number's Cloud API on its channel, the sandbox
/// (printing) for the rest; and a sentence saying which.
fn outbound(
    numbers: &[config::Number],
    channels: &switchyard_connectors::whatsapp::Numbers,
) -> Result<(Arc<dyn switchyard_engine::ports::Channel>, String)> {
    use switchyard_connectors::cloud_api::CloudApi;
    let sandbox = Arc::new(switchyard_connectors::sandbox::SandboxChannel::printing());
    if numbers.is_empty() {
        return Ok((
            sandbox,
            "no WhatsApp number configured: outbound messages go to the sandbox (printed here)"
                .into(),
        ));
    }
    let mut router = switchyard_connectors::channels::ByChannel::new(sandbox);
    for n in numbers {
        router = router.with(
            &channels.channel(Some(&n.api.phone_number_id)),
            Arc::new(CloudApi::new(n.api.clone())?),
        );
    }
    let ids: Vec<&str> = numbers
        .iter()
        .map(|n| n.api.phone_number_id.as_str())
        .collect();
    Ok((
        Arc::new(router),
        format!(
            "WhatsApp replies go out through the Cloud API as number {}; other channels to the sandbox (printed here)",
            ids.join(", ")
        ),
    ))
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    let cfg = config::resolve(&a, |name| std::env::var(name).ok())?;
    let Some(pack) = valid_pack(&cfg.rules)? else {
        return Ok(ExitCode::from(1));
    };
    for n in &cfg.numbers {
        if let Some(q) = &n.default_queue {
            if !pack.queues.contains_key(q.as_str()) {
                anyhow::bail!(
                    "number {}: its default queue `{q}` is not a queue of the pack {} (queues: {})",
                    n.api.phone_number_id,
                    cfg.rules.display(),
                    pack.queues
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    // Logs on stderr; `RUST_LOG` sets the level (default info). Message bodies are never logged.
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    switchyard_connectors::cloud_api::install_tls();
    // One rule names each number's channel, for the webhook route, the senders and the
    // default queues alike.
    let numbers = switchyard_connectors::whatsapp::Numbers::new(
        cfg.numbers
            .iter()
            .map(|n| n.api.phone_number_id.clone())
            .collect(),
    );
    let (channel, outbound_says) = outbound(&cfg.numbers, &numbers)?;
    let default_queues: Vec<(String, String)> = cfg
        .numbers
        .iter()
        .filter_map(|n| {
            let q = n.default_queue.clone()?;
            Some((numbers.channel(Some(&n.api.phone_number_id)), q))
        })
        .collect();
    let (db, listen) = (cfg.db.as_str(), cfg.listen.as_str());
    let Connectors {
        lookup,
        notifier,
        said: connectors_say,
    } = connectors(&pack, &cfg.rules, |n| std::env::var(n).ok())?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let runtime =
            start_runtime_with(pack, (db, cfg.pg.clone()), channel, notifier, lookup, &default_queues).await?;
        let state = Arc::new(switchyard_api::AppState {
            shopify_webhook_secret: a
                .shopify_webhook_secret
                .clone()
                .filter(|s| !s.is_empty())
                .map(String::into_bytes),
            whatsapp_verify_token: cfg.verify_token.clone(),
            whatsapp_app_secret: cfg.app_secret.clone().map(String::into_bytes),
            whatsapp_numbers: numbers,
            admin_token: cfg.admin_token.clone(),
            rules: switchyard_api::oversight::RulesSource::new(Some(cfg.rules.clone())),
            token_limiter: (cfg.api_rate > 0)
                .then(|| switchyard_api::token_limiter(cfg.api_rate, cfg.api_rate.saturating_mul(2))),
            ..switchyard_api::AppState::new(runtime.clone())
        });
        if a.watch {
            tokio::spawn(watch_rules(state.clone()));
        }
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let from = cfg.file.as_ref().map(|f| format!(" (configuration: {})", f.display())).unwrap_or_default();
        tracing::info!(rules = %cfg.rules.display(), listen = %listener.local_addr()?, db, "serving");
        eprintln!(
            "switchyard: serving {} on http://{} with {db}{from}; {outbound_says}",
            cfg.rules.display(),
            listener.local_addr()?
        );
        for s in &connectors_say {
            eprintln!("switchyard: connector {s}");
        }
        let shutdown = async {
            let term = async {
                #[cfg(unix)]
                if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    s.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
            eprintln!("switchyard: stopping; events not yet processed stay in the inbox for the next start");
        };
        switchyard_api::launch(listener, state, shutdown).await?;
        if let Ok(rt) = Arc::try_unwrap(runtime) {
            rt.shutdown().await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What the pack's files look like on disk: each `*.yaml`'s path, length and modification
/// time. A change means the pack may have changed.
fn pack_signature(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push((p, m.len(), m.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// `serve --watch`: looks at the pack's files twice a second; when they changed and have
/// been quiet for half a second (an editor or `git pull` writing several files), reloads
/// with the same guarantee as `POST /api/v1/rules/reload`.
async fn watch_rules(state: Arc<switchyard_api::AppState>) {
    use switchyard_api::oversight::{reload_from_disk, Reload};
    let Some(dir) = state.rules.dir.clone() else {
        return;
    };
    let sig = |d: PathBuf| async move {
        tokio::task::spawn_blocking(move || pack_signature(&d))
            .await
            .unwrap_or_default()
    };
    let mut seen = sig(dir.clone()).await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = sig(dir.clone()).await;
        if now == seen {
            continue;
        }
        // Let a burst of writes settle.
        let mut settled = now;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let again = sig(dir.clone()).await;
            if again == settled {
                break;
            }
            settled = again;
        }
        seen = settled;
        match reload_from_disk(&state).await {
            Ok(Reload::Loaded {
                hash,
                changed: true,
            }) => {
                tracing::info!(%hash, "rule pack changed on disk; reloaded");
                eprintln!("switchyard: rule pack reloaded ({hash})");
            }
            Ok(Reload::Loaded { .. }) => {}
            Ok(Reload::Rejected(d)) => {
                let text: Vec<String> = d.items.iter().map(|x| x.to_string()).collect();
                tracing::warn!("the changed rule pack is invalid; the old one keeps serving");
                eprintln!(
                    "switchyard: the changed rule pack is invalid; the old one keeps serving:\n{}",
                    text.join("\n")
                );
            }
            Err(e) => tracing::error!(error = %e, "reloading the rule pack failed"),
        }
    }
}

fn replay(file: &Path, to: &str, secret: Option<&str>, concurrency: usize) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    // Check every line before sending any: a bad file sends nothing.
    let mut bodies = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        serde_json::from_str::<serde_json::Value>(line).with_context(|| {
            format!(
                "{}:{}: not a JSON body; nothing was sent",
                file.display(),
                i + 1
            )
        })?;
        bodies.push(line.to_string());
    }
    switchyard_connectors::cloud_api::install_tls();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let bar = indicatif::ProgressBar::new(bodies.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let rt = tokio::runtime::Runtime::new()?;
    let started = std::time::Instant::now();
    let (accepted, rejected, errors) = rt.block_on(async {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let counts = Arc::new([
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ]);
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for body in bodies {
            let permit = permits.clone().acquire_owned().await?;
            let mut req = client.post(to).header("content-type", "application/json");
            if let Some(s) = secret {
                let sig = switchyard_connectors::whatsapp::signature(s.as_bytes(), body.as_bytes());
                req = req.header("x-hub-signature-256", sig);
            }
            let (counts, bar) = (counts.clone(), bar.clone());
            tasks.spawn(async move {
                let slot = match req.body(body).send().await {
                    Ok(r) if r.status().is_success() => 0,
                    Ok(r) => {
                        bar.set_message(format!("last rejection: HTTP {}", r.status()));
                        1
                    }
                    Err(e) => {
                        bar.set_message(format!("last error: {e}"));
                        2
                    }
                };
                counts[slot].fetch_add(1, Relaxed);
                bar.inc(1);
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok::<_, anyhow::Error>((
            counts[0].load(Relaxed),
            counts[1].load(Relaxed),
            counts[2].load(Relaxed),
        ))
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let sent = accepted + rejected + errors;
    println!(
        "sent {sent}, accepted {accepted}, rejected {rejected}, failed to send {errors} in {secs:.2} s ({:.0}/s)",
        sent as f64 / secs.max(1e-9)
    );
    Ok(if rejected + errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One scripted customer action of the demo.
enum DemoStep {
    Says(&'static str, &'static str),
    Taps(&'static str, &'static str),
    NewCodOrder(&'static str, &'static str),
}

/// A WhatsApp Cloud API webhook body with one customer message: text, or a tapped reply button.
fn wa_webhook(who: &str, id: &str, text: &str, button: Option<&str>) -> serde_json::Value {
    let message = match button {
        Some(b) => {
            serde_json::json!({ "from": who, "id": id, "timestamp": "1700000000", "type": "interactive",
            "interactive": { "type": "button_reply", "button_reply": { "id": b, "title": text } } })
        }
        None => {
            serde_json::json!({ "from": who, "id": id, "timestamp": "1700000000", "type": "text", "text": { "body": text } })
        }
    };
    serde_json::json!({ "object": "whatsapp_business_account", "entry": [ { "id": "demo", "changes": [ { "field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": { "display_phone_number": "15550000000", "phone_number_id": "demo" },
        "contacts": [ { "profile": { "name": format!("Customer {}", &who[who.len().saturating_sub(4)..]) }, "wa_id": who } ],
        "messages": [ message ] } } ] } ] })
}

/// Prints the bot's messages, with their buttons or list rows; returns the choices offered
/// by the last one (`(id, title)`), numbered from 1 in what was printed.
fn print_replies(
    out: &mut impl Write,
    who: &str,
    sent: &[(String, switchyard_engine::model::Outbound)],
    numbered: bool,
) -> Result<Vec<(String, String)>> {
    let mut choices = Vec::new();
    for (_, m) in sent {
        choices = match &m.template {
            Some(t) => t.buttons.iter().map(|b| (b.clone(), b.clone())).collect(),
            None if !m.buttons.is_empty() => m.buttons.clone(),
            None => m.list.as_ref().map(|l| l.rows.clone()).unwrap_or_default(),
        };
        let kind = match &m.template {
            Some(t) => format!("  (approved template {})", t.name),
            None => String::new(),
        };
        if numbered {
            writeln!(out, "bot: {}{kind}", m.text)?;
            for (i, (_, title)) in choices.iter().enumerate() {
                writeln!(out, "     {}) {title}", i + 1)?;
            }
        } else {
            let titles: Vec<&str> = choices.iter().map(|c| c.1.as_str()).collect();
            let extra = if titles.is_empty() {
                String::new()
            } else {
                format!(" [{}]", titles.join(" | "))
            };
            writeln!(out, "    bot → {who}: {}{kind}{extra}", m.text)?;
        }
    }
    Ok(choices)
}

/// One line on the conversation of `who`: status, queue, owner, tags, flow, open ticket.
async fn print_state(
    out: &mut impl Write,
    engine: &switchyard_engine::Engine,
    who: &str,
    indent: &str,
) -> Result<()> {
    let ctx = engine.context_of("whatsapp", who, now_ms()).await?;
    let c = &ctx.conversation;
    let ticket = ctx
        .ticket
        .as_ref()
        .map(|t| format!(", ticket {} ({}, {})", t.id, t.title, t.priority.as_str()))
        .unwrap_or_default();
    let flow = c
        .flow
        .as_ref()
        .map(|f| format!(", flow {}/{}", f.flow, f.step))
        .unwrap_or_default();
    let owner = c
        .assignee
        .as_ref()
        .map(|a| format!(", owner {a}"))
        .unwrap_or_default();
    writeln!(
        out,
        "{indent}conversation {}: {}, queue {}{owner}, tags [{}]{flow}{ticket}",
        c.id,
        c.status.as_str(),
        c.queue.as_deref().unwrap_or("none"),
        c.tags.join(", ")
    )?;
    Ok(())
}

/// One line per decision recorded for `who`'s conversation since the last call: the intent
/// and its confidence, the rules that matched, flow steps, routes and hand-offs.
async fn print_decisions(
    out: &mut impl Write,
    engine: &switchyard_engine::Engine,
    who: &str,
    seen: &mut std::collections::HashMap<i64, usize>,
) -> Result<()> {
    let id = engine
        .context_of("whatsapp", who, now_ms())
        .await?
        .conversation
        .id;
    let traces = engine.traces(id).await?;
    let from = seen.insert(id, traces.len()).unwrap_or(0);
    for (_, t) in traces.iter().skip(from) {
        let summary = t.summary();
        if !summary.is_empty() {
            writeln!(out, "    decided: {summary}")?;
        }
    }
    Ok(())
}

fn demo(keep_serving: bool, listen: &str) -> Result<ExitCode> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pk-ecommerce");
    let Some(pack) = valid_pack(&dir)? else {
        return Ok(ExitCode::from(1));
    };
    let tmp = tempfile::tempdir()?;
    let db = format!("sqlite://{}", tmp.path().join("demo.db").display());
    let rt = tokio::runtime::Runtime::new()?;
    // Not locked: with --keep-serving the sandbox prints on stdout too.
    let mut out = std::io::stdout();
    rt.block_on(async {
        let channel = Arc::new(switchyard_connectors::sandbox::SandboxChannel::new());
        let cases = pack.tests.len();
        let runtime = start_runtime(pack, &db, channel.clone(), Arc::new(switchyard_connectors::sandbox::SandboxNotifier::default()), &[]).await?;
        let addr = if keep_serving { listen } else { "127.0.0.1:0" };
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let base = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(switchyard_api::AppState::new(runtime.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(switchyard_api::launch(listener, state, async {
            let _ = stopped.await;
        }));
        switchyard_connectors::cloud_api::install_tls();
        let http = reqwest::Client::new();
        writeln!(out, "Switchyard demo: the example pack served on {base} with a fresh SQLite file ({db}),\nthe demo store and the sandbox channel. Customer messages are posted to /webhooks/whatsapp\nand go through the durable pipeline.\n")?;
        use DemoStep::*;
        let script = [
            NewCodOrder("923001234567", "#20001"),
            Taps("923001234567", "confirm"),
            Says("923331112223", "mera order kahan hai #55120"),
            Says("923451234567", "parcel toota hua aaya hai, bohat bura experience"),
            Says("923211234567", "size chota hai, exchange karna hai"),
            Says("923009876543", "kisi insaan se baat karwao"),
            Says("923111234567", "میرا پارسل کب آئے گا"),
        ];
        let mut seen = std::collections::HashMap::new();
        for (i, step) in script.iter().enumerate() {
            let before = channel.sent().len();
            let id = format!("wamid.demo.{i}");
            let (who, line) = match step {
                Says(who, text) => {
                    post_webhook(&http, &base, &wa_webhook(who, &id, text, None)).await?;
                    (who, format!("{who} says: {text}"))
                }
                Taps(who, b) => {
                    post_webhook(&http, &base, &wa_webhook(who, &id, b, Some(b))).await?;
                    (who, format!("{who} taps the button `{b}`"))
                }
                NewCodOrder(who, name) => {
                    // Store webhooks get their route with the Shopify connector (#7): the order
                    // event goes straight into the inbox here.
                    let order = sample_orders(&runtime.engine.pack()).into_iter().find(|o| o["name"] == *name).map(serde_json::Value::Object).unwrap_or_default();
                    let ev = switchyard_engine::model::Inbound::Order {
                        channel: "whatsapp".into(),
                        to: who.to_string(),
                        name: None,
                        phone: Some(format!("+{who}")),
                        provider_id: format!("demo-order-{i}"),
                        event: "order.created".into(),
                        order,
                    };
                    runtime.ingest(vec![ev]).await?;
                    (who, format!("store: new cash-on-delivery order {name} for {who}"))
                }
            };
            settle(&runtime).await?;
            writeln!(out, "▸ {line}")?;
            print_decisions(&mut out, &runtime.engine, who, &mut seen).await?;
            print_replies(&mut out, who, &channel.sent()[before..], false)?;
            print_state(&mut out, &runtime.engine, who, "    ").await?;
        }
        writeln!(out, "\nEvery decision is in the database with its trace; `switchyard test examples/pk-ecommerce` runs the pack's {cases} cases.")?;
        if keep_serving {
            channel.set_printing(true);
            writeln!(
                out,
                "\nStill serving on {base} (replies are printed here). Go on, e.g.:\n  curl -X POST {base}/webhooks/webchat -H 'content-type: application/json' -d '{{\"id\":\"w1\",\"from\":\"guest\",\"text\":\"mera order kahan hai #55120\"}}'\nCtrl-C stops."
            )?;
            out.flush()?;
            tokio::signal::ctrl_c().await?;
        }
        let _ = stop.send(());
        server.await??;
        if let Ok(rt) = Arc::try_unwrap(runtime) {
            rt.shutdown().await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn post_webhook(http: &reqwest::Client, base: &str, body: &serde_json::Value) -> Result<()> {
    let r = http
        .post(format!("{base}/webhooks/whatsapp"))
        .json(body)
        .send()
        .await?;
    if !r.status().is_success() {
        anyhow::bail!(
            "the webhook answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

fn chat(rules: &Path, who: &str) -> Result<ExitCode> {
    let Some(pack) = valid_pack(rules)? else {
        return Ok(ExitCode::from(1));
    };
    let tmp = tempfile::tempdir()?;
    let db = format!("sqlite://{}", tmp.path().join("chat.db").display());
    let rt = tokio::runtime::Runtime::new()?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "Talking to {} as +{who} on a temporary store (orders come from the demo store).\nType a message; a number picks a choice; /state shows the conversation; /quit or Ctrl-D ends.",
        rules.display()
    )?;
    rt.block_on(async {
        let channel = Arc::new(switchyard_connectors::sandbox::SandboxChannel::new());
        let runtime = start_runtime(
            pack,
            &db,
            channel.clone(),
            Arc::new(switchyard_connectors::sandbox::SandboxNotifier::default()),
            &[],
        )
        .await?;
        let mut choices: Vec<(String, String)> = Vec::new();
        let stdin = std::io::stdin();
        let prompt = |out: &mut std::io::Stdout| -> Result<()> {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                write!(out, "> ")?;
                out.flush()?;
            }
            Ok(())
        };
        prompt(&mut out)?;
        for (i, line) in stdin.lock().lines().enumerate() {
            let line = line?;
            let text = line.trim();
            match text {
                "" => {
                    prompt(&mut out)?;
                    continue;
                }
                "/quit" | "/exit" => break,
                "/state" => {
                    print_state(&mut out, &runtime.engine, who, "").await?;
                    prompt(&mut out)?;
                    continue;
                }
                _ => {}
            }
            let picked = text
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|n| choices.get(n))
                .cloned();
            let ev = match &picked {
                Some((id, title)) => msg(who, i, "button", title, Some(id)),
                None => msg(who, i, "text", text, None),
            };
            let before = channel.sent().len();
            runtime.ingest(vec![ev]).await?;
            settle(&runtime).await?;
            let sent = channel.sent();
            if sent.len() == before {
                writeln!(out, "(no reply)")?;
                print_state(&mut out, &runtime.engine, who, "").await?;
            }
            choices = print_replies(&mut out, who, &sent[before..], true)?;
            prompt(&mut out)?;
        }
        if let Ok(rt) = Arc::try_unwrap(runtime) {
            rt.shutdown().await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn msg(
    who: &str,
    i: usize,
    kind: &str,
    text: &str,
    choice: Option<&str>,
) -> switchyard_engine::model::Inbound {
    switchyard_engine::model::Inbound::Message {
        channel: "whatsapp".into(),
        from: who.into(),
        name: Some(format!("Customer {}", &who[who.len().saturating_sub(4)..])),
        phone: Some(format!("+{who}")),
        provider_id: format!("demo-{i}"),
        kind: kind.into(),
        text: text.into(),
        choice: choice.map(String::from),
        payload: serde_json::Value::Null,
    }
}

/// Waits until the inbox is processed and nothing is waiting to be sent.
async fn settle(rt: &switchyard_engine::worker::Runtime) -> Result<()> {
    for _ in 0..500 {
        if rt.engine.settled().await? {
            return Ok(());
        }
        rt.wake_outbox();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    anyhow::bail!("the engine did not finish within 5 s")
}
