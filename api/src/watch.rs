//! `serve --watch`: the rule pack's files watched on disk and reloaded when they change, with
//! the guarantee of `POST /api/v1/rules/reload` (a pack with errors never replaces the one
//! serving).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::oversight::{reload_from_disk, Reload};
use crate::AppState;

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
pub async fn watch_rules(state: Arc<AppState>) {
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
