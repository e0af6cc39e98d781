//! `switchyard export` (recorded inbound events as JSON lines) and `switchyard diff` (what a
//! new pack would have decided differently on them). The work is `switchyard_engine::replay`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use switchyard_engine::model::Inbound;
use switchyard_engine::replay::{self, Change, Recorded};

/// `7d`, `12h`, `30m` back from now, as a time in ms.
fn since_ms(since: Option<&str>) -> Result<i64> {
    let Some(s) = since else { return Ok(0) };
    let d = switchyard_rules::calendar::parse_duration(s)
        .map_err(|e| anyhow::anyhow!("--since {s}: {e}"))?;
    Ok(switchyard_engine::model::now_millis() - d.as_millis() as i64)
}

async fn read_db(db: &str, since: Option<&str>, limit: usize) -> Result<Vec<Recorded>> {
    // Reading only: a SQLite file that is not there is a mistake, not a new database.
    if let Some(path) = db.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if !path.is_empty() && !Path::new(path).exists() {
            bail!("no database at {path}");
        }
    }
    let store = switchyard_engine::store::open(db).await.with_context(|| {
        format!(
            "cannot open the database {}",
            switchyard_engine::store::redact(db)
        )
    })?;
    Ok(replay::export(store.as_ref(), since_ms(since)?, limit).await?)
}

pub(crate) fn export_cmd(
    db: &str,
    since: Option<&str>,
    mask: bool,
    salt: Option<&str>,
) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    let events = rt.block_on(read_db(db, since, usize::MAX))?;
    let salt = match (mask, salt) {
        (true, Some(s)) => s.to_string(),
        // A fresh salt: pseudonyms cannot be matched across exports (or reversed by hashing
        // every phone number).
        (true, None) => {
            let mut b = [0u8; 16];
            getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            hex::encode(b)
        }
        _ => String::new(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for mut r in events {
        if mask {
            replay::mask(&mut r, &salt);
        }
        serde_json::to_writer(&mut out, &r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Reads `events.jsonl`: one recorded event a line; a line that does not read stops with its
/// line number (nothing is replayed from a file half understood).
fn read_events(path: &Path) -> Result<Vec<Recorded>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Recorded = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a recorded event", path.display(), i + 1))?;
        out.push(r);
    }
    Ok(out)
}

fn load(dir: &Path) -> Result<Arc<switchyard_rules::Pack>> {
    let loaded = switchyard_rules::load_dir(dir)?;
    match loaded.pack {
        Some(p) => Ok(Arc::new(p)),
        None => bail!(
            "{} is not a valid pack (`switchyard validate {}` says why)",
            dir.display(),
            dir.display()
        ),
    }
}

pub(crate) struct DiffArgs<'a> {
    pub old: &'a Path,
    pub new: &'a Path,
    pub events: Option<&'a Path>,
    pub db: Option<&'a str>,
    pub since: Option<&'a str>,
    pub orders: Option<&'a Path>,
    pub examples: usize,
    pub json: bool,
    pub fail_on: &'a [String],
}

pub(crate) fn diff_cmd(a: DiffArgs<'_>) -> Result<ExitCode> {
    let fail_on: Vec<Change> = a
        .fail_on
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            Change::parse(s.trim()).ok_or_else(|| {
                let all: Vec<&str> = Change::ALL.iter().map(|c| c.as_str()).collect();
                anyhow::anyhow!("--fail-on {s}: not a kind of change ({})", all.join(", "))
            })
        })
        .collect::<Result<_>>()?;
    let old = load(a.old)?;
    let new = load(a.new)?;
    let rt = tokio::runtime::Runtime::new()?;
    let events = match (a.events, a.db) {
        (Some(f), None) => read_events(f)?,
        (None, Some(db)) => rt.block_on(read_db(db, a.since, usize::MAX))?,
        _ => bail!("give the events: --events FILE or --db URL"),
    };
    // Lookups are answered from what the events carried (the orders of order events), and
    // the `--orders` file.
    let mut orders: Vec<Map<String, Value>> = Vec::new();
    if let Some(p) = a.orders {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        orders = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON array of orders", p.display()))?;
    }
    for r in &events {
        if let Inbound::Order {
            order: Value::Object(o),
            ..
        } = &r.event
        {
            orders.push(o.clone());
        }
    }
    let started = std::time::Instant::now();
    let events = Arc::new(events);
    let d = rt.block_on(async {
        let store = |o: &Vec<Map<String, Value>>| -> Arc<dyn switchyard_engine::ports::Lookup> {
            Arc::new(switchyard_connectors::demo::DemoStore::new(o.clone()))
        };
        let old = replay::Replayer::new(old.clone(), store(&orders));
        let new = replay::Replayer::new(new.clone(), store(&orders));
        replay::replay_and_diff(old, new, events, a.examples).await
    })?;
    let took = started.elapsed();
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &d)?;
        writeln!(out)?;
    } else {
        write!(
            out,
            "{}",
            d.markdown(&a.old.display().to_string(), &a.new.display().to_string())
        )?;
    }
    eprintln!(
        "replayed {} events through each pack in {:.2} s",
        d.events,
        took.as_secs_f64()
    );
    Ok(if d.any(&fail_on) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
