//! The pack's connectors as the engine's ports: each connector the pack declares, built from
//! the environment variables it names (credentials never come from the pack), with one line
//! per connector saying what it became, for the start-up message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use switchyard_rules::Pack;

/// Why the connectors could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("the `{name}` connector's orders: cannot read {}: {error}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: expected a JSON array of orders: {error}", path.display())]
    Orders {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("{0}")]
    Client(String),
}

/// The pack's connectors as the engine's ports, from the environment variables they name:
/// Shopify with its shop and token (else the demo store when `fallback: demo`), the demo
/// store, outbound webhooks with their URL and secret; and a sentence per connector for the
/// start-up message.
pub struct Assembled {
    pub lookup: Arc<dyn switchyard_engine::ports::Lookup>,
    pub notifier: Arc<dyn switchyard_engine::ports::Notifier>,
    /// One line per connector for the start-up message.
    pub said: Vec<String>,
}

pub fn assemble(
    pack: &Pack,
    dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Assembled, AssembleError> {
    use crate::shopify::{Shopify, ShopifyConfig, Stores};
    use crate::webhooks::{Endpoint, Target, Webhooks};
    use switchyard_engine::ports::Lookup;
    use switchyard_rules::pack::ConnectorRt;
    let demo: Arc<dyn Lookup> = Arc::new(crate::demo::DemoStore::new(sample_orders(pack)));
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
                let text = std::fs::read_to_string(&path).map_err(|e| AssembleError::Read {
                    name: name.clone(),
                    path: path.clone(),
                    error: e,
                })?;
                let orders: Vec<Map<String, Value>> =
                    serde_json::from_str(&text).map_err(|e| AssembleError::Orders {
                        path: path.clone(),
                        error: e,
                    })?;
                said.push(format!(
                    "`{name}`: {} orders from {}",
                    orders.len(),
                    path.display()
                ));
                stores.insert(
                    name.clone(),
                    Ok(Arc::new(crate::demo::DemoStore::new(orders))),
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
                        Ok(Arc::new(
                            Shopify::new(cfg).map_err(|e| AssembleError::Client(e.to_string()))?,
                        ) as Arc<dyn Lookup>)
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
                let l = crate::http_lookup::HttpLookup::new(name, rt.clone(), &env)
                    .map(|l| Arc::new(l) as Arc<dyn Lookup>);
                if let Err(e) = &l {
                    said.push(format!("`{name}`: not configured ({e})"));
                }
                stores.insert(name.clone(), l);
            }
            ConnectorRt::Demo | ConnectorRt::Static { .. } => {}
        }
    }
    let notifier = Webhooks::new(hooks, std::time::Duration::from_secs(10))
        .map_err(|e| AssembleError::Client(e.to_string()))?;
    let mut lookup = Stores::new(stores);
    if let Some(fb) = &pack.settings.fallback {
        match set(&fb.url_env) {
            Some(url) => {
                let key = fb.key_env.as_deref().and_then(set);
                let f = crate::llm::LlmFallback::new(fb, &url, key, &pack.intents)
                    .map_err(|e| AssembleError::Client(e.to_string()))?;
                said.push(format!(
                    "classifier fallback: model `{}` (at most {} a minute)",
                    fb.model, fb.per_minute
                ));
                lookup = lookup.with_fallback(Arc::new(f));
            }
            None => said.push(format!(
                "classifier fallback: off (set {} to use model `{}`)",
                fb.url_env, fb.model
            )),
        }
    }
    Ok(Assembled {
        lookup: Arc::new(lookup),
        notifier: Arc::new(notifier),
        said,
    })
}

/// Orders for the demo store: every order in the pack's test fixtures.
pub fn sample_orders(pack: &Pack) -> Vec<Map<String, Value>> {
    let mut seen = std::collections::BTreeSet::new();
    pack.tests
        .iter()
        .flat_map(|t| t.fixtures.orders.iter().cloned())
        .filter(|o| seen.insert(o.get("name").map(|n| n.to_string()).unwrap_or_default()))
        .collect()
}
