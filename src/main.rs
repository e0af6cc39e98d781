//! `switchyard`: the command line. Arguments here; each command's wiring and printing in
//! `cmd/` (`pack.rs`: validate, classify, test, schema; `serve.rs`; `admin.rs`: migrate,
//! prune, token; `demo.rs`: demo, chat, replay). No business logic lives in the binary.
//! Exit codes: 0 ok, 1 validation or test failure, 2 usage or I/O error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod config;
use cmd::{admin::*, demo::*, pack::*, serve::*};
use config::ServeArgs;

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
        /// Also print the rules in the order they run (files by path, then file order).
        #[arg(long)]
        explain: bool,
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
        /// Also list the rules, flow steps and their `on`/`branch` arms, templates and intents
        /// no test exercised, with `file:line:col`.
        #[arg(long)]
        coverage: bool,
        /// Fail (exit 1) when coverage is below this percentage (implies --coverage).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        min_coverage: Option<u8>,
    },
    /// Print the JSON Schema of rule-pack files (for editor autocompletion).
    Schema,
    /// Apply the database migrations without serving (SQLite or PostgreSQL by the URL).
    Migrate {
        #[arg(
            long,
            env = "SWITCHYARD_DB",
            hide_env_values = true,
            default_value = "sqlite://switchyard.db"
        )]
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
        #[arg(
            long,
            env = "SWITCHYARD_DB",
            hide_env_values = true,
            default_value = "sqlite://switchyard.db"
        )]
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
    /// Why a conversation is where it is: its decision traces, one line each (`--json`: the
    /// traces as stored, one JSON object per line).
    Trace {
        /// The conversation's id.
        id: i64,
        #[arg(long)]
        json: bool,
        #[arg(
            long,
            env = "SWITCHYARD_DB",
            hide_env_values = true,
            default_value = "sqlite://switchyard.db"
        )]
        db: String,
    },
    /// Write the inbound events a database received (customer messages and taps, order
    /// events, delivery statuses) as JSON lines, in order: what `diff` replays.
    Export {
        #[arg(
            long,
            env = "SWITCHYARD_DB",
            hide_env_values = true,
            default_value = "sqlite://switchyard.db"
        )]
        db: String,
        /// Only events received this long ago or later (`7d`, `12h`).
        #[arg(long)]
        since: Option<String>,
        /// Replace phone numbers, names and e-mail addresses by stable pseudonyms (a
        /// conversation stays one conversation) and drop the channels' raw payloads.
        #[arg(long)]
        mask: bool,
        /// With --mask: the pseudonyms' salt (default: a fresh random one per export).
        #[arg(long, requires = "mask")]
        salt: Option<String>,
    },
    /// What a new pack would have decided differently: replays recorded events through both
    /// packs on isolated temporary stores and reports what changed (Markdown, or --json).
    Diff {
        /// The pack running now.
        old: PathBuf,
        /// The changed pack.
        new: PathBuf,
        /// Recorded events (`switchyard export`).
        #[arg(long, conflicts_with = "db")]
        events: Option<PathBuf>,
        /// Or read them from a database.
        #[arg(long)]
        db: Option<String>,
        /// With --db: only events this recent (`7d`).
        #[arg(long, requires = "db")]
        since: Option<String>,
        /// Orders the store answers lookups with (a JSON array), besides those the events carry.
        #[arg(long)]
        orders: Option<PathBuf>,
        /// Example conversations shown per kind of change.
        #[arg(long, default_value_t = 5)]
        examples: usize,
        #[arg(long)]
        json: bool,
        /// Exit 1 when any of these changed (`routes,tickets`; also intents, replies, flows,
        /// handoffs), for CI.
        #[arg(long, value_delimiter = ',')]
        fail_on: Vec<String>,
    },
    /// Agents' log-ins for the browser workspace.
    #[command(subcommand)]
    Agent(AgentCommand),
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
pub(crate) enum AgentCommand {
    /// Sets an agent's password for the workspace (`/login`), read from the first line of
    /// standard input (at least 10 characters); stored as an argon2id hash. `--clear` removes
    /// it (the agent can no longer log in; live sessions stay until revoked or expired).
    Passwd {
        /// The agent's id.
        id: String,
        #[arg(long)]
        clear: bool,
        #[arg(
            long,
            env = "SWITCHYARD_DB",
            hide_env_values = true,
            default_value = "sqlite://switchyard.db"
        )]
        db: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Creates a token and prints it (the only time it is shown; only its hash is stored).
    Create {
        /// `agent`, `supervisor` or `admin`.
        #[arg(long)]
        role: String,
        /// The agent the token acts as (required for `agent`).
        #[arg(long)]
        agent: Option<String>,
        #[arg(
            long,
            env = "SWITCHYARD_DB",
            hide_env_values = true,
            default_value = "sqlite://switchyard.db"
        )]
        db: String,
    },
    /// Revokes a token by its id.
    Revoke {
        id: i64,
        #[arg(
            long,
            env = "SWITCHYARD_DB",
            hide_env_values = true,
            default_value = "sqlite://switchyard.db"
        )]
        db: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Validate {
            dir,
            deny_warnings,
            explain,
        } => validate(&dir, deny_warnings, explain),
        Command::Classify {
            rules,
            eval,
            min_accuracy,
        } => match eval {
            Some(file) => eval_cmd(&rules, &file, min_accuracy),
            None => classify(&rules),
        },
        Command::Test {
            dir,
            filter,
            coverage,
            min_coverage,
        } => test_cmd(
            &dir,
            filter.as_deref(),
            coverage || min_coverage.is_some(),
            min_coverage,
        ),
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
        Command::Agent(cmd) => agent_cmd(cmd),
        Command::Trace { id, json, db } => trace_cmd(id, json, &db),
        Command::Export {
            db,
            since,
            mask,
            salt,
        } => cmd::diff::export_cmd(&db, since.as_deref(), mask, salt.as_deref()),
        Command::Diff {
            old,
            new,
            events,
            db,
            since,
            orders,
            examples,
            json,
            fail_on,
        } => cmd::diff::diff_cmd(cmd::diff::DiffArgs {
            old: &old,
            new: &new,
            events: events.as_deref(),
            db: db.as_deref(),
            since: since.as_deref(),
            orders: orders.as_deref(),
            examples,
            json,
            fail_on: &fail_on,
        }),
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
