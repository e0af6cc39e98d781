//! What `switchyard serve` runs with: command-line options, environment variables and the
//! configuration file (`switchyard.yaml`), in that order of precedence, over the defaults.
//!
//! Secrets never live in the file: a number names the environment variable that holds its
//! access token (`access_token_env`), and the verify token and app secret come from the
//! environment (or options) only.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use switchyard_connectors::cloud_api::CloudApiConfig;

/// `switchyard serve`: every option can also be set by the environment variable shown, and
/// most in the configuration file.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// The configuration file [default: ./switchyard.yaml when it exists].
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The rule pack [default: examples/pk-ecommerce].
    #[arg(long, env = "SWITCHYARD_RULES")]
    pub rules: Option<PathBuf>,
    /// The database: `sqlite://FILE`, or `postgres://USER@HOST/DB` for several instances
    /// [default: sqlite://switchyard.db].
    #[arg(long, env = "SWITCHYARD_DB", hide_env_values = true)]
    pub db: Option<String>,
    /// PostgreSQL: connections of the pool; an instance uses up to 3 × this + 1 [default: 8].
    #[arg(long, env = "SWITCHYARD_DB_POOL")]
    pub db_pool: Option<u32>,
    /// PostgreSQL: seconds after which a statement is cancelled [default: 30].
    #[arg(long, env = "SWITCHYARD_DB_STATEMENT_TIMEOUT")]
    pub db_statement_timeout: Option<u64>,
    /// Address and port for the webhooks and the API [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    pub listen: Option<String>,
    /// Log lines as text or as JSON objects (one per line), on stderr [default: text].
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// The WhatsApp business number's id (Meta's "phone number ID"): the primary number.
    /// With an access token, replies go out through the Cloud API; without any number, they
    /// go to the sandbox (printed).
    #[arg(long, env = "WHATSAPP_PHONE_NUMBER_ID")]
    pub whatsapp_phone_number_id: Option<String>,
    /// The primary number's Cloud API access token. Never logged.
    #[arg(long, env = "WHATSAPP_ACCESS_TOKEN", hide_env_values = true)]
    pub whatsapp_access_token: Option<String>,
    /// The token Meta echoes in the webhook verification handshake.
    #[arg(long, env = "WHATSAPP_VERIFY_TOKEN", hide_env_values = true)]
    pub whatsapp_verify_token: Option<String>,
    /// The app secret: webhooks without a valid `X-Hub-Signature-256` are refused. Without
    /// it, `POST /webhooks/whatsapp` refuses every delivery.
    #[arg(long, env = "WHATSAPP_APP_SECRET", hide_env_values = true)]
    pub whatsapp_app_secret: Option<String>,
    /// Accepted as an admin token of the API (bootstrapping; create real tokens with
    /// `switchyard token create`).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The Graph API base URL [default: https://graph.facebook.com].
    #[arg(long, env = "WHATSAPP_API_BASE")]
    pub whatsapp_api_base: Option<String>,
    /// The Graph API version [default: v21.0].
    #[arg(long, env = "WHATSAPP_API_VERSION")]
    pub whatsapp_api_version: Option<String>,
    /// Most messages per second through the primary number [default: 80, Meta's default].
    #[arg(long, env = "WHATSAPP_SEND_RATE")]
    pub whatsapp_send_rate: Option<u32>,
    /// Admin API requests per second per token, bursts of twice that; 0 for no limit
    /// [default: 50].
    #[arg(long, env = "SWITCHYARD_API_RATE")]
    pub api_rate: Option<u32>,
    /// The secret Shopify signs order webhooks with: `POST /webhooks/shopify` requires a
    /// valid `X-Shopify-Hmac-Sha256`. Without it, the route refuses every delivery.
    #[arg(long, env = "SHOPIFY_WEBHOOK_SECRET", hide_env_values = true)]
    pub shopify_webhook_secret: Option<String>,
    /// The key web chat visitor sessions are signed with (at least 32 characters; the same on
    /// every instance) [default: a key made at start, so sessions end with the process].
    #[arg(long, env = "SWITCHYARD_WEBCHAT_SECRET", hide_env_values = true)]
    pub webchat_secret: Option<String>,
    /// DEVELOPMENT ONLY: accept webhooks whose secret is not configured without a signature
    /// (anyone who can reach the server can then write as any customer).
    #[arg(long)]
    pub insecure_unsigned_webhooks: bool,
    /// Mark the workspace's session cookies `Secure` (served over TLS). Behind a proxy that
    /// sends `X-Forwarded-Proto: https` they are marked so without it.
    #[arg(long, env = "SWITCHYARD_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Reload the rule pack when its files change (a pack with errors is refused and the one
    /// serving keeps serving).
    #[arg(long)]
    pub watch: bool,
    /// A candidate pack to run in shadow: it decides every live event too, with no effect,
    /// and what it would do differently is counted (`/metrics`) and listed
    /// (`GET /api/v1/rules/shadow`) until it is promoted or stopped.
    #[arg(long, value_name = "CANDIDATE_DIR")]
    pub shadow: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `switchyard.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    rules: Option<PathBuf>,
    db: Option<String>,
    db_pool: Option<u32>,
    db_statement_timeout: Option<u64>,
    listen: Option<String>,
    log_format: Option<LogFormat>,
    api_rate: Option<u32>,
    #[serde(default)]
    whatsapp: FileWhatsApp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWhatsApp {
    api_base: Option<String>,
    api_version: Option<String>,
    /// The business numbers; the first is the primary one (channel `whatsapp`).
    #[serde(default)]
    numbers: Vec<FileNumber>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNumber {
    phone_number_id: String,
    /// The environment variable holding this number's access token.
    access_token_env: String,
    /// Where this number's conversations go when nothing handled them.
    default_queue: Option<String>,
    send_rate: Option<u32>,
}

/// One business number, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number {
    pub api: CloudApiConfig,
    pub default_queue: Option<String>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug)]
pub struct Settings {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    pub rules: PathBuf,
    pub db: String,
    /// PostgreSQL's pool and timeouts (unused on SQLite).
    pub pg: switchyard_engine::store::postgres::PgSettings,
    pub listen: String,
    pub log_format: LogFormat,
    /// Admin API requests per second per token; 0 for no limit.
    pub api_rate: u32,
    pub verify_token: Option<String>,
    pub app_secret: Option<String>,
    pub admin_token: Option<String>,
    /// In order; the first is the primary number. Empty: the sandbox.
    pub numbers: Vec<Number>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Resolves `args` (options and environment, already merged by clap) over the configuration
/// file over the defaults. `env` reads the variables a file names (`access_token_env`).
pub fn resolve(args: &ServeArgs, env: impl Fn(&str) -> Option<String>) -> Result<Settings> {
    let default_file = Path::new("switchyard.yaml");
    let file_path = match &args.config {
        Some(p) => Some(p.clone()),
        None => default_file.exists().then(|| default_file.to_path_buf()),
    };
    let file: FileConfig = match &file_path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the configuration file {}", p.display()))?;
            serde_saphyr::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e}\nhint: the keys are rules, db, listen, log_format, api_rate and whatsapp \
                     (api_base, api_version, numbers: [{{phone_number_id, access_token_env, default_queue, send_rate}}])",
                    p.display()
                )
            })?
        }
        None => FileConfig::default(),
    };
    let base = args
        .whatsapp_api_base
        .clone()
        .or(file.whatsapp.api_base.clone())
        .unwrap_or_else(|| CloudApiConfig::DEFAULT_BASE_URL.into());
    let version = args
        .whatsapp_api_version
        .clone()
        .or(file.whatsapp.api_version.clone())
        .unwrap_or_else(|| CloudApiConfig::DEFAULT_VERSION.into());
    let api = |id: &str, token: &str, rate: Option<u32>| CloudApiConfig {
        base_url: base.clone(),
        version: version.clone(),
        rate_per_second: rate.unwrap_or(80),
        ..CloudApiConfig::new(id, token)
    };
    let mut numbers = Vec::new();
    for (i, n) in file.whatsapp.numbers.iter().enumerate() {
        let where_ = format!(
            "{}: whatsapp.numbers[{i}] ({})",
            file_path.as_deref().unwrap_or(default_file).display(),
            n.phone_number_id
        );
        if numbers
            .iter()
            .any(|x: &Number| x.api.phone_number_id == n.phone_number_id)
        {
            bail!("{where_}: this number is listed twice");
        }
        let token = env(&n.access_token_env).filter(|t| !t.trim().is_empty());
        let Some(token) = token else {
            bail!(
                "{where_}: the environment variable {} (its access token) is not set",
                n.access_token_env
            );
        };
        numbers.push(Number {
            api: api(&n.phone_number_id, &token, n.send_rate),
            default_queue: n.default_queue.clone(),
        });
    }
    // The number given by option or environment is the primary one: it takes the place of
    // the file's entry for the same id, or goes first.
    match (
        nonempty(&args.whatsapp_phone_number_id),
        nonempty(&args.whatsapp_access_token),
    ) {
        (Some(id), Some(token)) => {
            let rate = args.whatsapp_send_rate;
            match numbers.iter().position(|n| n.api.phone_number_id == id) {
                Some(i) => {
                    let mut n = numbers.remove(i);
                    n.api.access_token = token.into();
                    if let Some(r) = rate {
                        n.api.rate_per_second = r;
                    }
                    numbers.insert(0, n);
                }
                None => numbers.insert(
                    0,
                    Number {
                        api: api(id, token, rate),
                        default_queue: None,
                    },
                ),
            }
        }
        (Some(_), None) => bail!(
            "WHATSAPP_PHONE_NUMBER_ID is set but WHATSAPP_ACCESS_TOKEN is not: set both to send through WhatsApp, or neither to use the sandbox"
        ),
        (None, Some(_)) if numbers.is_empty() => bail!(
            "WHATSAPP_ACCESS_TOKEN is set but WHATSAPP_PHONE_NUMBER_ID is not: set both to send through WhatsApp, or neither to use the sandbox"
        ),
        _ => {}
    }
    if let Some(t) = nonempty(&args.admin_token) {
        let n = t.chars().count();
        if n < 32 {
            bail!(
                "SWITCHYARD_ADMIN_TOKEN is {n} characters: an admin's key needs at least 32 (e.g. `openssl rand -hex 32`)"
            );
        }
    }
    Ok(Settings {
        rules: args
            .rules
            .clone()
            .or(file.rules)
            .unwrap_or_else(|| "examples/pk-ecommerce".into()),
        db: args
            .db
            .clone()
            .or(file.db)
            .unwrap_or_else(|| "sqlite://switchyard.db".into()),
        pg: {
            let d = switchyard_engine::store::postgres::PgSettings::default();
            switchyard_engine::store::postgres::PgSettings {
                max_connections: args
                    .db_pool
                    .or(file.db_pool)
                    .unwrap_or(d.max_connections)
                    .max(1),
                statement_timeout: args
                    .db_statement_timeout
                    .or(file.db_statement_timeout)
                    .map(std::time::Duration::from_secs)
                    .unwrap_or(d.statement_timeout),
                ..d
            }
        },
        listen: args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into()),
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text),
        api_rate: args.api_rate.or(file.api_rate).unwrap_or(50),
        verify_token: args.whatsapp_verify_token.clone(),
        app_secret: nonempty(&args.whatsapp_app_secret).map(str::to_string),
        admin_token: nonempty(&args.admin_token).map(str::to_string),
        numbers,
        file: file_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("switchyard.yaml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "BRAND_A_TOKEN" => Some("token-a".into()),
            "BRAND_B_TOKEN" => Some("token-b".into()),
            _ => None,
        }
    }

    const TWO_BRANDS: &str = "db: sqlite:///var/lib/switchyard/s.db\nlisten: 0.0.0.0:8080\nlog_format: json\nwhatsapp:\n  api_version: v22.0\n  numbers:\n    - { phone_number_id: '111', access_token_env: BRAND_A_TOKEN }\n    - { phone_number_id: '222', access_token_env: BRAND_B_TOKEN, default_queue: brand_b, send_rate: 20 }\n";

    #[test]
    fn a_short_admin_token_is_refused() {
        let args = |t: &str| ServeArgs {
            admin_token: Some(t.into()),
            ..Default::default()
        };
        let e = resolve(&args("abc"), env).unwrap_err().to_string();
        assert!(e.contains("SWITCHYARD_ADMIN_TOKEN is 3 characters"), "{e}");
        assert!(resolve(&args(&"k".repeat(32)), env).is_ok());
    }

    #[test]
    fn defaults_without_a_file() {
        let s = resolve(
            &ServeArgs {
                config: None,
                ..Default::default()
            },
            env,
        )
        .unwrap();
        // (No switchyard.yaml at the crate root.)
        assert_eq!(s.db, "sqlite://switchyard.db");
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.rules, PathBuf::from("examples/pk-ecommerce"));
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(s.numbers.is_empty(), "the sandbox");
    }

    #[test]
    fn the_file_under_options_and_environment() {
        let (_d, p) = file(TWO_BRANDS);
        let args = ServeArgs {
            config: Some(p),
            db: Some("sqlite://override.db".into()),
            ..Default::default()
        };
        let s = resolve(&args, env).unwrap();
        assert_eq!(s.db, "sqlite://override.db", "an option beats the file");
        assert_eq!(s.listen, "0.0.0.0:8080");
        assert_eq!(s.log_format, LogFormat::Json);
        let ids: Vec<_> = s
            .numbers
            .iter()
            .map(|n| n.api.phone_number_id.as_str())
            .collect();
        assert_eq!(ids, ["111", "222"]);
        assert_eq!(s.numbers[0].api.access_token, "token-a");
        assert_eq!(s.numbers[1].api.access_token, "token-b");
        assert_eq!(s.numbers[1].api.version, "v22.0");
        assert_eq!(s.numbers[1].api.rate_per_second, 20);
        assert_eq!(s.numbers[0].api.rate_per_second, 80);
        assert_eq!(s.numbers[1].default_queue.as_deref(), Some("brand_b"));
        // WHATSAPP_PHONE_NUMBER_ID/WHATSAPP_ACCESS_TOKEN name the primary number.
        let args = ServeArgs {
            whatsapp_phone_number_id: Some("222".into()),
            whatsapp_access_token: Some("rotated".into()),
            ..args
        };
        let s = resolve(&args, env).unwrap();
        let ids: Vec<_> = s
            .numbers
            .iter()
            .map(|n| n.api.phone_number_id.as_str())
            .collect();
        assert_eq!(ids, ["222", "111"]);
        assert_eq!(s.numbers[0].api.access_token, "rotated");
        assert_eq!(s.numbers[0].default_queue.as_deref(), Some("brand_b"));
    }

    /// The error `resolve` gives for the file `p`.
    fn error_of(p: PathBuf, env: impl Fn(&str) -> Option<String>) -> String {
        let args = ServeArgs {
            config: Some(p),
            ..Default::default()
        };
        resolve(&args, env).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let (_d, p) = file(TWO_BRANDS);
        let e = error_of(p, |_| None);
        assert!(
            e.contains("whatsapp.numbers[0] (111)") && e.contains("BRAND_A_TOKEN"),
            "{e}"
        );
        let (_d, p) = file("listen: 1.2.3.4:80\nlisten_on: x\n");
        let e = error_of(p, env);
        assert!(
            e.contains("listen_on") && e.contains("hint: the keys are"),
            "{e}"
        );
        let (_d, p) = file("whatsapp:\n  numbers:\n    - { phone_number_id: '1', access_token_env: BRAND_A_TOKEN }\n    - { phone_number_id: '1', access_token_env: BRAND_B_TOKEN }\n");
        let e = error_of(p, env);
        assert!(e.contains("listed twice"), "{e}");
        let e = error_of("nowhere.yaml".into(), env);
        assert!(
            e.contains("cannot read the configuration file nowhere.yaml"),
            "{e}"
        );
    }
}
