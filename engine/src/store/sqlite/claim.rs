//! One serving process per SQLite file, and how durable its commits are.

use super::*;

/// The `synchronous` parameter of a SQLite URL (removed from it): `full` by default.
pub(super) fn synchronous_of(url: &str) -> Result<(String, &'static str)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), "FULL"));
    };
    let mut sync = "FULL";
    let mut rest = Vec::new();
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("synchronous", v)) => {
                sync = match v.to_ascii_lowercase().as_str() {
                    "full" => "FULL",
                    "normal" => "NORMAL",
                    "extra" => "EXTRA",
                    other => {
                        return Err(StoreError::Unreachable(format!(
                            "synchronous={other}: use full (the default), extra or normal"
                        )))
                    }
                }
            }
            _ => rest.push(kv),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, sync))
}

/// A SQLite file claimed by one serving process (see [`claim`]); released when dropped.
#[derive(Debug)]
pub struct Claim {
    _file: std::fs::File,
}

/// Claims the database file at `url` for this process, or says which process has it: a SQLite
/// file belongs to one `serve` (its context cache and id counters live in the process). The
/// claim is an exclusive lock on `FILE.lock` beside it, released when the process ends however
/// it ends. `sqlite::memory:` needs none.
pub fn claim(url: &str) -> Result<Option<Claim>> {
    use std::io::Write;
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let (url, _) = synchronous_of(url)?;
    let path = SqliteConnectOptions::from_str(&url)?
        .get_filename()
        .to_path_buf();
    let lock_path = {
        let mut p = path.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Unreachable(format!("cannot open {}: {e}", lock_path.display()))
        })?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = write!(file, "{}", std::process::id());
            Ok(Some(Claim { _file: file }))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let owner = std::fs::read_to_string(&lock_path).unwrap_or_default();
            Err(StoreError::InUse(format!(
                "{} is served by another switchyard process{}: a SQLite database belongs to one \
                 process (use PostgreSQL for several instances)",
                path.display(),
                Some(owner.trim())
                    .filter(|o| !o.is_empty())
                    .map(|o| format!(" (pid {o})"))
                    .unwrap_or_default()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unreachable(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}
