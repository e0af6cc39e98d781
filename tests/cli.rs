//! The `switchyard` binary as scripts and CI use it: output formats and exit codes.

use std::io::Write;
use std::process::{Command, Stdio};

mod common;
use common::free_port;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = bin().args(args).output().expect("runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_the_example_pack() {
    let (code, out, _) = run(&["validate", "examples/pk-ecommerce", "--deny-warnings"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("examples/pk-ecommerce: valid ("), "{out}");
    assert!(out.contains("0 warnings"), "{out}");
}

#[test]
fn validate_prints_every_error_with_its_position_and_exits_1() {
    let (code, out, _) = run(&["validate", "rules/tests/packs/undefined_refs"]);
    assert_eq!(code, 1);
    assert!(out.contains("rules/tests/packs/undefined_refs/pack.yaml:3:18: error: undefined queue `suport`\n  hint: did you mean `support`?"), "{out}");
    assert_eq!(out.matches(": error: ").count(), 12, "{out}");
    assert!(
        out.trim_end().ends_with("invalid: 12 errors, 1 warning"),
        "{out}"
    );
}

#[test]
fn warnings_pass_unless_denied() {
    let (code, out, _) = run(&["validate", "rules/tests/packs/warnings"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(": warning: intent `greeting` has only 3 examples"),
        "{out}"
    );
    let (code, out, _) = run(&["validate", "rules/tests/packs/warnings", "--deny-warnings"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(--deny-warnings)"), "{out}");
}

#[test]
fn usage_and_io_errors_exit_2() {
    let (code, _, err) = run(&["validate", "no/such/dir"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read the rule pack at no/such/dir"),
        "{err}"
    );
    let (code, _, _) = run(&["validate"]);
    assert_eq!(code, 2);
    let (code, _, _) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    let (code, _, err) = run(&[
        "classify",
        "--rules",
        "examples/pk-ecommerce",
        "--eval",
        "no/such.csv",
    ]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn classify_answers_one_json_line_per_message() {
    let mut child = bin()
        .args(["classify", "--rules", "examples/pk-ecommerce"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("mera order kahan hai #10234\nparcel toota hua aaya hai\nxyz qqq\n".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["text"], "mera order kahan hai #10234");
    assert_eq!(lines[0]["intent"], "order_status");
    assert_eq!(lines[0]["entities"]["order_no"], "10234");
    assert!(lines[0]["confidence"].as_f64().unwrap() > 0.5);
    assert_eq!(lines[1]["intent"], "complaint");
    assert_eq!(lines[2]["intent"], "unknown");
}

#[test]
fn classify_eval_reports_accuracy_per_intent_and_confusions() {
    let (code, out, _) = run(&[
        "classify",
        "--rules",
        "examples/pk-ecommerce",
        "--eval",
        "rules/tests/data/intents-dev.csv",
        "--min-accuracy",
        "0.9",
    ]);
    assert_eq!(code, 0, "{out}");
    let acc: f64 = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(acc >= 0.9, "{out}");
    assert!(
        out.contains("precision") && out.contains("order_status"),
        "{out}"
    );
    // With a `language` column: the confident-wrong rate and the language accuracy too.
    let (code, out, _) = run(&[
        "classify",
        "--rules",
        "examples/pk-ecommerce",
        "--eval",
        "examples/pk-ecommerce/eval/fresh.csv",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\nconfident-wrong: 0.0"), "{out}");
    assert!(out.contains("\nlanguage: 0.9"), "{out}");
    let (code, out, _) = run(&[
        "classify",
        "--rules",
        "examples/pk-ecommerce",
        "--eval",
        "rules/tests/data/intents-dev.csv",
        "--min-accuracy",
        "1.01",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("below --min-accuracy"), "{out}");
}

#[test]
fn classify_refuses_an_invalid_pack() {
    let (code, _, err) = run(&["classify", "--rules", "rules/tests/packs/cron"]);
    assert_eq!(code, 1);
    assert!(err.contains("has 2 fields"), "{err}");
}

#[test]
fn schema_is_json_for_editors() {
    let (code, out, _) = run(&["schema"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["properties"]["rules"].is_object());
    assert!(out.contains("start_flow"));
}

#[test]
fn test_runs_the_example_pack_and_reports_the_count() {
    let (code, out, _) = run(&["test", "examples/pk-ecommerce"]);
    assert_eq!(code, 0, "{out}");
    let last = out.lines().last().unwrap();
    let passed: usize = last.split_whitespace().next().unwrap().parse().unwrap();
    assert!(passed >= 25, "{last}");
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
}

#[test]
fn lists_from_data_keep_to_whatsapp_limits_and_hand_off_when_empty() {
    let (code, out, _) = run(&["test", "tests/packs/lists"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().last().unwrap(), "2 passed, 0 failed", "{out}");
}

#[test]
fn prune_keeps_a_week_and_says_what_it_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("p.db").display());
    let (code, _, err) = run(&["prune", "--older-than", "2d", "--db", &db]);
    assert_ne!(code, 0);
    assert!(err.contains("at least 7d"), "{err}");
    let (code, out, err) = run(&["prune", "--older-than", "30d", "--db", &db]);
    assert_eq!(code, 0, "{err}");
    for table in ["inbox", "traces", "jobs", "outbox"] {
        assert!(out.contains(&format!("{table}: 0 rows deleted")), "{out}");
    }
}

/// A PostgreSQL that does not answer stops `serve` and `migrate` at once with the reason and
/// a non-zero exit (no server needed: nothing listens on the port).
/// Credentials in the environment never show: not in `serve --help` (the database URL may hold
/// a password), not in start-up errors.
#[test]
fn secrets_do_not_show_in_help_or_errors() {
    let o = bin()
        .args(["serve", "--help"])
        .env("SWITCHYARD_DB", "postgres://app:hunter2@db.internal/shop")
        .env("WHATSAPP_APP_SECRET", "app-secret-value")
        .env("SWITCHYARD_ADMIN_TOKEN", "admin-token-value")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("SWITCHYARD_DB"), "{help}");
    for secret in ["hunter2", "app-secret-value", "admin-token-value"] {
        assert!(!help.contains(secret), "{secret} in --help");
    }
    let url = format!("postgres://app:hunter2@127.0.0.1:{}/shop", free_port());
    let (code, out, err) = run(&["migrate", "--db", &url]);
    assert_ne!(code, 0);
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{err}"
    );
}

/// Two `serve` on one SQLite file: the second refuses to start and says why.
#[test]
fn a_second_serve_on_one_sqlite_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut first = bin()
        .args(["serve", "--db", &db, "--listen", &addr])
        .env_remove("SWITCHYARD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let (code, _, err) = run(&["serve", "--db", &db, "--listen", "127.0.0.1:0"]);
    first.kill().unwrap();
    let _ = first.wait();
    assert!(up, "the first serve did not start");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is served by another switchyard process (pid "),
        "{err}"
    );
}

#[test]
fn an_unreachable_database_is_a_clear_error_at_start() {
    let url = format!("postgres://postgres@127.0.0.1:{}/switchyard", free_port());
    let started = std::time::Instant::now();
    let (code, _, err) = run(&["serve", "--db", &url, "--listen", "127.0.0.1:0"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot connect to the database"), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (code, _, err) = run(&["migrate", "--db", &url]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot migrate the database"), "{err}");
}

#[test]
fn a_failing_test_prints_what_happened_and_the_trace_and_exits_1() {
    let (code, out, _) = run(&["test", "tests/packs/failing"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ok      passes"), "{out}");
    assert!(out.contains("FAILED  expects the wrong queue"), "{out}");
    assert!(out.contains("expected queue `vip`, got `none`"), "{out}");
    assert!(
        out.contains("expected a reply containing \"goodbye\", got [\"Hello from the bot\"]"),
        "{out}"
    );
    assert!(
        out.contains("decision trace:") && out.contains("\"rule\":\"greet\""),
        "{out}"
    );
    assert_eq!(out.lines().last().unwrap(), "1 passed, 1 failed");
}

#[test]
fn demo_plays_the_sample_conversations_on_a_fresh_database() {
    let (code, out, err) = run(&["demo"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("approved template cod_confirmation_v2"),
        "{out}"
    );
    assert!(out.contains("Order #20001 is confirmed"), "{out}");
    assert!(
        out.contains("Aap ka order #55120 out for delivery hai"),
        "{out}"
    );
    assert!(out.contains("queue complaints"), "{out}");
    assert!(
        out.contains("decided: intent complaint (")
            && out.contains("rule “complaints become tickets” on message.received"),
        "the decisions are shown: {out}"
    );
}

#[test]
fn serve_refuses_half_of_the_whatsapp_credentials_and_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let out = bin()
        .args(["serve", "--db", &db, "--listen", "127.0.0.1:0"])
        .env("WHATSAPP_PHONE_NUMBER_ID", "111")
        .env_remove("WHATSAPP_ACCESS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WHATSAPP_ACCESS_TOKEN is not"), "{err}");
    let out = bin()
        .args(["serve", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("json"));
}

/// `replay` against a real `serve`: signed bodies are accepted, unsigned ones rejected (exit
/// 1), a file with a broken line sends nothing (exit 2).
#[test]
fn replay_posts_signed_webhooks_to_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = bin()
        .args(["serve", "--listen", &addr])
        .arg("--db")
        .arg(format!("sqlite://{}", dir.path().join("s.db").display()))
        .env("WHATSAPP_APP_SECRET", "shh")
        .env_remove("WHATSAPP_PHONE_NUMBER_ID")
        .env_remove("WHATSAPP_ACCESS_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let file = dir.path().join("hooks.jsonl");
    let line = |id: &str| {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"111"}},"contacts":[{{"profile":{{"name":"A"}},"wa_id":"923001234567"}}],"messages":[{{"from":"923001234567","id":"{id}","timestamp":"1700000000","type":"text","text":{{"body":"order kahan hai"}}}}]}}}}]}}]}}"#
        )
    };
    std::fs::write(
        &file,
        format!("{}\n\n{}\n{}\n", line("w1"), line("w2"), line("w3")),
    )
    .unwrap();
    let url = format!("http://{addr}/webhooks/whatsapp");
    let signed = bin()
        .args([
            "replay",
            file.to_str().unwrap(),
            "--to",
            &url,
            "--secret",
            "shh",
        ])
        .env_remove("WHATSAPP_APP_SECRET")
        .output()
        .unwrap();
    let unsigned = bin()
        .args(["replay", file.to_str().unwrap(), "--to", &url])
        .env_remove("WHATSAPP_APP_SECRET")
        .output()
        .unwrap();
    std::fs::write(&file, format!("{}\nnot json\n", line("w4"))).unwrap();
    let broken = bin()
        .args(["replay", file.to_str().unwrap(), "--to", &url])
        .output()
        .unwrap();
    server.kill().unwrap();
    let _ = server.wait();
    assert!(up, "serve did not start on {addr}");
    let out = String::from_utf8_lossy(&signed.stdout);
    assert_eq!(signed.status.code(), Some(0), "{out}");
    assert!(out.contains("sent 3, accepted 3, rejected 0"), "{out}");
    let out = String::from_utf8_lossy(&unsigned.stdout);
    assert_eq!(unsigned.status.code(), Some(1), "{out}");
    assert!(out.contains("sent 3, accepted 0, rejected 3"), "{out}");
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains(":2: not a JSON body; nothing was sent")
    );
}

#[test]
fn chat_talks_to_a_pack_and_numbers_the_choices() {
    use std::io::Write;
    let mut child = bin()
        .args([
            "chat",
            "--rules",
            "examples/pk-ecommerce",
            "--as",
            "923001234567",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Answered by the bot, then handed to a person; /state shows where the conversation is.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            "mera order kahan hai #10234\nkisi insaan se baat karwao\n/state\n/quit\n".as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Roman Urdu in, Roman Urdu out.
    assert!(
        text.contains("bot: Aap ka order #10234 raste mein hai"),
        "{text}"
    );
    // `chat` runs on the wall clock: told a person will reply, or (outside store hours)
    // when the team is back.
    assert!(
        text.contains("bot: Aap ko hamari team se mila rahe hain")
            || text.contains("bot: Shukriya! Hamari team subah 10 se raat 10 baje tak"),
        "{text}"
    );
    assert!(
        text.contains("queue support"),
        "/state shows the hand-off: {text}"
    );
}

#[test]
fn chat_picks_a_numbered_choice() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pack.yaml"),
        r#"
version: 1
settings: { default_queue: support }
queues: { support: { assignment: round_robin } }
rules:
  - name: menu
    when: message.received
    if: message.choice == ()
    then: [ { reply: { buttons: { body: "Pick one", buttons: [ { id: "yes", title: "Haan" }, { id: "no", title: "Nahin" } ] } } } ]
  - name: picked
    when: message.received
    if: message.choice != ()
    then: [ { reply: { text: "You picked {{message.choice}}" } } ]
"#,
    )
    .unwrap();
    let mut child = bin()
        .args(["chat", "--rules", dir.path().to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bot: Pick one\n     1) Haan\n     2) Nahin\n"),
        "{text}"
    );
    assert!(text.contains("bot: You picked no"), "{text}");
}

#[test]
fn demo_keep_serving_answers_over_http_afterwards() {
    use std::io::BufRead;
    let port = free_port();
    let mut child = bin()
        .args([
            "demo",
            "--keep-serving",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while let Ok(l) =
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            if l.contains(needle) {
                return true;
            }
        }
        false
    };
    let serving = wait_for("Still serving on");
    // A web chat visitor: a session from the server, then a message with it.
    switchyard_connectors::cloud_api::install_tls();
    let posted = serving.then(|| {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let http = reqwest::Client::new();
            let base = format!("http://127.0.0.1:{port}");
            let session: serde_json::Value = http
                .post(format!("{base}/webchat/sessions"))
                .send()
                .await?
                .json()
                .await?;
            let token = session["token"].as_str().unwrap_or_default().to_string();
            let customer = session["customer"].as_str().unwrap_or_default().to_string();
            let r = http
                .post(format!("{base}/webhooks/webchat"))
                .bearer_auth(token)
                .json(&serde_json::json!({ "id": "w1", "text": "mera order kahan hai #55120" }))
                .send()
                .await?;
            Ok::<_, reqwest::Error>((r.status().as_u16(), customer))
        })
    });
    let (status, customer) = match posted {
        Some(Ok(p)) => p,
        _ => (0, String::new()),
    };
    // A web chat visitor has no phone: the order's details are not theirs to see.
    let answered = status == 200
        && wait_for(&format!(
            "[sandbox → webchat {customer}] Aap ki hifazat ke liye order ki tafseel sirf usi number par di ja sakti hai"
        ));
    child.kill().unwrap();
    let _ = child.wait();
    assert!(serving, "the demo did not say it keeps serving");
    assert_eq!(status, 200, "the web chat message was not accepted");
    assert!(answered, "the reply to the webchat message was not printed");
}

#[test]
fn token_create_prints_once_and_revoke_works() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let out = bin()
        .args([
            "token", "create", "--role", "agent", "--agent", "ayesha", "--db", &db,
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("sy_") && token.len() == 67, "{token}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("token 1 (agent, agent ayesha) created"));
    let (code, _, err) = run(&["token", "create", "--role", "agent", "--db", &db]);
    assert_eq!(code, 2);
    assert!(err.contains("--agent"), "{err}");
    assert_eq!(run(&["token", "revoke", "1", "--db", &db]).0, 0);
    assert_eq!(
        run(&["token", "revoke", "1", "--db", &db]).0,
        1,
        "no live token 1 any more"
    );
}

/// A plain HTTP GET over loopback; the status and the body.
fn http_get(addr: &str, path: &str, token: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// `serve --watch`: a change on disk is loaded; a broken pack is refused, said on stderr, and
/// the old pack keeps serving.
#[test]
fn serve_watch_reloads_good_packs_and_keeps_serving_on_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    std::fs::create_dir(&pack).unwrap();
    let yaml = |reply: &str| {
        format!(
            "version: 1\nsettings: {{ default_queue: support }}\nqueues: {{ support: {{ assignment: manual }} }}\nrules:\n  - name: echo\n    when: message.received\n    then: [ {{ reply: {{ text: \"{reply}\" }} }} ]\n"
        )
    };
    std::fs::write(pack.join("p.yaml"), yaml("one")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("serve.log");
    let mut server = bin()
        .args(["serve", "--watch", "--listen", &addr])
        .arg("--rules")
        .arg(&pack)
        .arg("--db")
        .arg(format!("sqlite://{}", dir.path().join("s.db").display()))
        .env(
            "SWITCHYARD_ADMIN_TOKEN",
            "watch-admin-token-of-32-characters-x",
        )
        .env_remove("WHATSAPP_PHONE_NUMBER_ID")
        .env_remove("WHATSAPP_ACCESS_TOKEN")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let up = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let hash = || {
        let (st, body) = http_get(
            &addr,
            "/api/v1/rules",
            "watch-admin-token-of-32-characters-x",
        );
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["hash"].as_str().unwrap().to_string()
    };
    let wait_for = |what: &dyn Fn() -> bool| {
        (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            what()
        })
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(up, "serve did not start on {addr}");
        let first = hash();
        std::fs::write(
            pack.join("p.yaml"),
            yaml("one").replace("reply:", "replly:"),
        )
        .unwrap();
        let refused = wait_for(&|| {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("the changed rule pack is invalid; the old one keeps serving")
        });
        assert!(refused, "{}", std::fs::read_to_string(&log).unwrap());
        assert!(
            std::fs::read_to_string(&log).unwrap().contains("p.yaml:"),
            "diagnostics with positions"
        );
        assert_eq!(hash(), first, "the old pack keeps serving");
        std::fs::write(pack.join("p.yaml"), yaml("two")).unwrap();
        assert!(wait_for(&|| hash() != first), "the good pack was loaded");
    }));
    server.kill().unwrap();
    let _ = server.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// `serve` with no shop credentials: the example pack's store is the demo store, a signed
/// Shopify order webhook starts the COD confirmation (printed by the sandbox), and start-up says
/// which connector is what and which webhook refuses deliveries for want of its secret.
#[test]
fn serve_takes_signed_shopify_order_webhooks_with_no_shop_credentials() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = bin()
        .args(["serve", "--listen", &addr])
        .arg("--db")
        .arg(format!("sqlite://{}", dir.path().join("s.db").display()))
        .env_remove("SHOPIFY_SHOP")
        .env_remove("SHOPIFY_ACCESS_TOKEN")
        .env("SHOPIFY_WEBHOOK_SECRET", "shop-secret")
        .env_remove("WHATSAPP_APP_SECRET")
        .env_remove("WHATSAPP_PHONE_NUMBER_ID")
        .env_remove("WHATSAPP_ACCESS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let order = r##"{"id":20001,"name":"#20001","total_price":"3499.00","payment_gateway_names":["Cash on Delivery (COD)"],"customer":{"first_name":"Ayesha","phone":"+923001234567"},"shipping_address":{"phone":"0300 1234567"}}"##;
    let mut status = String::new();
    if up {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /webhooks/shopify HTTP/1.1\r\nHost: {addr}\r\nX-Shopify-Topic: orders/create\r\nX-Shopify-Webhook-Id: w1\r\nX-Shopify-Hmac-Sha256: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{order}",
            switchyard_connectors::shopify::webhook_signature(b"shop-secret", order.as_bytes()),
            order.len()
        )
        .unwrap();
        s.read_to_string(&mut status).unwrap();
    }
    // The sandbox prints the send after the outbox takes it: read until it does (or a
    // deadline), rather than for a fixed time.
    let printed = Arc::new(Mutex::new(String::new()));
    let reader = {
        let printed = printed.clone();
        let mut out = server.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                printed
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let want =
        "[sandbox → whatsapp 923001234567] Please confirm your cash-on-delivery order #20001";
    for _ in 0..400 {
        if !up || printed.lock().unwrap().contains(want) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill().unwrap();
    let out = server.wait_with_output().unwrap();
    reader.join().unwrap();
    let stdout = printed.lock().unwrap().clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(up, "serve did not start: {stderr}");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        stderr.contains("connector `store`: the `demo_store` store (set SHOPIFY_SHOP and SHOPIFY_ACCESS_TOKEN for Shopify)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("POST /webhooks/shopify: signatures checked (SHOPIFY_WEBHOOK_SECRET)")
            && stderr.contains(
                "POST /webhooks/whatsapp REFUSES every delivery (503) until WHATSAPP_APP_SECRET is set"
            ),
        "{stderr}"
    );
    assert!(stdout.contains(want), "{stdout}");
}

/// `switchyard trace --db … ID` prints why a conversation is where it is, one decision per
/// line (the rule that routed it included), or the traces as JSON; an unknown id says so.
#[test]
fn trace_prints_a_conversations_decisions() {
    use std::sync::Arc;
    use switchyard_engine::model::{now_millis, Inbound};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conv = rt.block_on(async {
        let store = switchyard_engine::store::open(&db).await.unwrap();
        let loaded = switchyard_rules::load_dir(std::path::Path::new("tests/packs/echo")).unwrap();
        let engine = switchyard_engine::pipeline::Engine::new(
            store.clone(),
            Arc::new(loaded.pack.unwrap()),
            Arc::new(switchyard_connectors::demo::DemoStore::new(vec![])),
        );
        let m = Inbound::Message {
            channel: "whatsapp".into(),
            from: "923001234567".into(),
            name: None,
            phone: None,
            provider_id: "wamid.t1".into(),
            kind: "text".into(),
            text: "hello".into(),
            choice: None,
            payload: serde_json::Value::Null,
        };
        engine.ingest(vec![m], now_millis()).await.unwrap();
        for row in engine.pending_events(10).await.unwrap() {
            engine.process(&row, now_millis()).await.unwrap();
        }
        store.conversation_ids().await.unwrap()[0]
    });
    drop(rt);
    let out = bin()
        .args(["trace", "--db", &db, &conv.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rule “echo” on message.received") && text.contains("route support"),
        "{text}"
    );
    let out = bin()
        .args(["trace", "--json", "--db", &db, &conv.to_string()])
        .output()
        .unwrap();
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["trace"]["steps"][0]["kind"], "rule");
    let out = bin().args(["trace", "--db", &db, "999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no conversation 999"));
}

/// `validate --explain` prints the rules in the order they run: files sorted by path, then in
/// file order; counts are grammatical.
#[test]
fn validate_explains_the_order_rules_run_in() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |name: &str| {
        format!("  - name: {name}\n    when: message.received\n    then: [ {{ route: {{ queue: support }} }} ]\n")
    };
    std::fs::write(
        dir.path().join("pack.yaml"),
        "version: 1\nsettings: { default_queue: support }\nqueues: { support: { assignment: manual } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        format!("rules:\n{}{}", rule("b one"), rule("b two")),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        format!("rules:\n{}", rule("a one")),
    )
    .unwrap();
    let out = bin()
        .arg("validate")
        .arg(dir.path())
        .arg("--explain")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("(3 files, 0 intents, 3 rules, 0 flows, 0 tests; 1 warning;"),
        "{text}"
    );
    let order: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(order.len(), 3, "{text}");
    assert!(
        order[0].contains("a.yaml:2:5") && order[0].contains("a one"),
        "{text}"
    );
    assert!(
        order[1].contains("b.yaml:2:5") && order[1].contains("b one"),
        "{text}"
    );
    assert!(
        order[2].contains("b.yaml:5:5") && order[2].contains("b two"),
        "{text}"
    );
    // One mistake: "1 error", not "1 errors".
    std::fs::write(dir.path().join("a.yaml"), "rules:\n  - name: broken\n    when: message.recieved\n    then: [ { route: { queue: support } } ]\n").unwrap();
    let out = bin().arg("validate").arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.trim_end().ends_with("invalid: 1 error, 1 warning"),
        "{text}"
    );
}

/// `test --coverage` lists what no test exercised, with `file:line:col`; `--min-coverage`
/// fails below it.
#[test]
fn test_coverage_lists_what_no_case_exercised() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pack.yaml"),
        r#"version: 1
settings: { default_queue: support }
queues: { support: { assignment: manual } }
templates:
  hello: "Hello!"
  unused: "Nobody sends this"
rules:
  - name: greet
    when: message.received
    if: message.text == "hi"
    then: [ { reply: { template: hello } } ]
    stop: true
  - name: never tested
    when: message.received
    if: message.text == "bye"
    then: [ { route: { queue: support } } ]
tests:
  - name: a greeting
    conversation:
      - customer: "hi"
        expect: { reply_contains: "Hello" }
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = bin()
            .arg("test")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = run(&["--coverage"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("coverage: 50.0% (2 of 4"), "{text}");
    let missed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not exercised"))
        .collect();
    assert_eq!(missed.len(), 2, "{text}");
    assert!(
        missed[0].ends_with("pack.yaml:6:3: template `unused`"),
        "{text}"
    );
    assert!(
        missed[1].ends_with("pack.yaml:13:5: rule `never tested`"),
        "{text}"
    );
    let (code, text) = run(&["--min-coverage", "60"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("below --min-coverage 60%"), "{text}");
    assert_eq!(run(&["--min-coverage", "50"]).0, Some(0));
}

fn customer_says(from: &str, id: &str, text: &str) -> switchyard_engine::model::Inbound {
    switchyard_engine::model::Inbound::Message {
        channel: "whatsapp".into(),
        from: from.into(),
        name: Some(format!("Name of {from}")),
        phone: Some(format!("+{from}")),
        provider_id: id.into(),
        kind: "text".into(),
        text: text.into(),
        choice: None,
        payload: serde_json::json!({ "raw": "the channel's payload" }),
    }
}

/// `export` writes what a database received, in order, masked on request (the same customer
/// under the same pseudonym, no phone or name left); `diff` replays it through two packs.
#[test]
fn export_writes_the_recorded_events_masked_and_diff_replays_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("e.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = switchyard_engine::store::open(&db).await.unwrap();
        store
            .ingest(
                vec![
                    customer_says(
                        "923001110001",
                        "wamid.e1",
                        "call me on 0300-1112223, parcel toota hua aaya hai",
                    ),
                    customer_says(
                        "923001110002",
                        "wamid.e2",
                        "the shirt is torn, very bad quality",
                    ),
                    customer_says("923001110001", "wamid.e3", "hello?"),
                ],
                switchyard_engine::model::now_millis(),
            )
            .await
            .unwrap();
    });
    let (code, out, err) = run(&["export", "--db", &db]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["event"]["from"], "923001110001");
    assert_eq!(lines[2]["event"]["text"], "hello?");
    let (code, masked, err) = run(&["export", "--db", &db, "--mask", "--salt", "test"]);
    assert_eq!(code, 0, "{err}");
    for secret in [
        "923001110001",
        "923001110002",
        "Name of",
        "0300-1112223",
        "1112223",
        "the channel's payload",
    ] {
        assert!(!masked.contains(secret), "{secret} in {masked}");
    }
    let m: Vec<serde_json::Value> = masked
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        m[0]["event"]["from"], m[2]["event"]["from"],
        "one customer, one pseudonym"
    );
    assert_ne!(m[0]["event"]["from"], m[1]["event"]["from"]);
    assert!(m[0]["event"]["text"]
        .as_str()
        .unwrap()
        .ends_with("parcel toota hua aaya hai"));
    // A file of them replays through two packs: the same pack changes nothing.
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, &masked).unwrap();
    let (code, report, err) = run(&[
        "diff",
        "examples/pk-ecommerce",
        "examples/pk-ecommerce",
        "--events",
        file.to_str().unwrap(),
        "--fail-on",
        "routes,tickets",
    ]);
    assert_eq!(code, 0, "{report}{err}");
    assert!(
        report.contains("3 events of 2 conversations replayed"),
        "{report}"
    );
    assert!(report.contains("**No difference**"), "{report}");
    // A line that is not an event stops everything, naming it.
    std::fs::write(
        &file,
        format!("{}\n{{\"nope\": 1}}\n", masked.lines().next().unwrap()),
    )
    .unwrap();
    let (code, _, err) = run(&[
        "diff",
        "examples/pk-ecommerce",
        "examples/pk-ecommerce",
        "--events",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("events.jsonl:2: not a recorded event"),
        "{err}"
    );
}

/// A rule change that sends complaints to supervisors moves exactly the recorded complaint
/// conversations, and the report names exactly them; `--fail-on routes` fails CI for it.
#[test]
fn diff_names_exactly_the_conversations_a_rule_change_moves() {
    let dir = tempfile::tempdir().unwrap();
    // The new pack: the example with complaints routed to supervisors.
    let new = dir.path().join("new");
    std::fs::create_dir(&new).unwrap();
    for e in std::fs::read_dir("examples/pk-ecommerce").unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, new.join(p.file_name().unwrap())).unwrap();
        }
    }
    let rules = std::fs::read_to_string(new.join("rules.yaml")).unwrap();
    let from = "      - ticket: { category: complaint, priority: high, queue: complaints, title: \"Complaint from {{contact.name}}\" }\n      - route: { queue: complaints }";
    assert!(rules.contains(from));
    std::fs::write(
        new.join("rules.yaml"),
        rules.replace(from, "      - ticket: { category: complaint, priority: high, queue: supervisors, title: \"Complaint from {{contact.name}}\" }\n      - route: { queue: supervisors }"),
    )
    .unwrap();
    let at = 1_795_420_000_000i64; // a Monday, 12:00 in Karachi
    let events = [
        ("923002220001", "parcel toota hua aaya hai"),
        ("923002220002", "mera order kahan hai #10234"),
        ("923002220003", "the stitching came apart, worst quality"),
        ("923002220004", "size chota hai, exchange karna hai"),
        ("923002220001", "and nobody replies"),
        ("923002220005", "talk to a human please"),
    ];
    let lines: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(i, (from, text))| {
            serde_json::json!({ "at": at + i as i64 * 1000, "event": customer_says(from, &format!("wamid.d{i}"), text) }).to_string()
        })
        .collect();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let args = |extra: &[&str]| {
        let mut v = vec![
            "diff",
            "examples/pk-ecommerce",
            new.to_str().unwrap(),
            "--events",
            file.to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let o = bin().args(args(&["--json"])).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["events"], 6);
    assert_eq!(d["conversations"], 5);
    assert_eq!(
        d["conversations_changed"]["routes"],
        serde_json::json!(["whatsapp:923002220001", "whatsapp:923002220003"])
    );
    assert_eq!(
        d["totals"]["routes"],
        serde_json::json!([3, 2]),
        "three events of two conversations"
    );
    assert!(
        d["totals"].get("intents").is_none(),
        "the classifier did not change: {d}"
    );
    assert!(d["totals"].get("flows").is_none());
    let ex = &d["examples"]["routes"][0];
    assert_eq!(ex["old"]["queue"], "complaints");
    assert_eq!(ex["new"]["queue"], "supervisors");
    assert!(ex["old_trace"]
        .as_str()
        .unwrap()
        .contains("rule “complaints become tickets”"));
    // The Markdown report, and CI's gate.
    let (code, md, _) = run(&args(&["--fail-on", "routes"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(code, 1, "{md}");
    assert!(md.contains("| routes | 3 | 2 |"), "{md}");
    assert!(md.contains("queue: complaints → supervisors"), "{md}");
    let (code, _, _) = run(&args(&["--fail-on", "flows,intents"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(code, 0);
    let (code, _, err) = run(&args(&["--fail-on", "moods"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(code, 2);
    assert!(err.contains("not a kind of change"), "{err}");
}

/// A pack's rules read `message.language` and set the contact's language; a language set by a
/// rule holds against detection until `set_language: auto`; `language_fallbacks` is followed.
#[test]
fn rules_read_and_set_the_customers_language() {
    let (code, out, err) = run(&["test", "tests/packs/languages"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");
}
