//! The decision for one message (classify + every rule condition that can match), the cost of
//! loading the example pack, and how the decision grows with the number of rules.
//!
//! Run: `cargo bench -p switchyard-rules --bench decision`; figures go in benches/README.md.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard_rules::script::Clock;
use switchyard_rules::{load_dir, load_files, SourceFile};

const MESSAGES: &[&str] = &[
    "mera order kahan hai #10234",
    "parcel toota hua aaya hai, bohat bura experience",
    "I want to return this dress, size is small",
    "میرا آرڈر کہاں ہے",
    "hello",
];

fn clock() -> Clock {
    Clock {
        now: "2026-11-23T07:00:00Z".parse().unwrap(),
        window_open: true,
    }
}

fn decision(c: &mut Criterion) {
    let pack = load_dir(Path::new("../examples/pk-ecommerce"))
        .unwrap()
        .pack
        .expect("valid example pack");
    let mut g = c.benchmark_group("decision");
    for (i, msg) in MESSAGES.iter().enumerate() {
        g.bench_with_input(BenchmarkId::new("classify_and_rules", i), msg, |b, msg| {
            b.iter(|| {
                let (cls, mut vars) = pack.message_vars(black_box(msg), clock().now);
                vars.set_json(
                    "conversation",
                    &serde_json::json!({ "status": "open", "tags": [] }),
                );
                let ev = pack.evaluate("message.received", &cls.intent, &mut vars.scope(), clock());
                black_box(ev.outcomes.len())
            })
        });
    }
    g.bench_function("classify_only", |b| {
        b.iter(|| black_box(pack.classifier.classify(black_box(MESSAGES[0]))))
    });
    g.finish();

    c.bench_function("load_validate_compile_example_pack", |b| {
        b.iter(|| {
            black_box(
                load_dir(Path::new("../examples/pk-ecommerce"))
                    .unwrap()
                    .pack
                    .is_some(),
            )
        })
    });
}

/// A pack with `n` rules spread over 9 intents (like a large shop's pack).
fn synthetic(n: usize) -> switchyard_rules::Pack {
    let intents = [
        "order_status",
        "cod_confirm",
        "cancel_order",
        "complaint",
        "return_exchange",
        "address_change",
        "payment_issue",
        "human_agent",
        "greeting",
    ];
    let mut y = String::from("version: 1\nsettings: { default_queue: support }\nqueues: { support: { assignment: round_robin } }\nintents:\n");
    for i in intents {
        y.push_str(&format!("  {i}: {{ examples: [\"{i} one\", \"{i} two\", \"{i} three\", \"{i} four\", \"{i} five\"] }}\n"));
    }
    y.push_str("rules:\n");
    for r in 0..n {
        let i = intents[r % intents.len()];
        y.push_str(&format!(
            "  - name: rule {r}\n    when: message.received\n    if: intent == \"{i}\" && message.text.len() > {}\n    then: [ {{ tag: t{r} }} ]\n",
            r % 7
        ));
    }
    let l = load_files(
        vec![SourceFile {
            rel: "p.yaml".into(),
            display: "p.yaml".into(),
            text: y,
        }],
        "bench",
    );
    l.pack.expect("valid synthetic pack")
}

fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules_scaling");
    for n in [10, 100, 1000] {
        let pack = synthetic(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &pack, |b, pack| {
            b.iter(|| {
                let (cls, vars) = pack.message_vars("complaint three please", clock().now);
                let ev = pack.evaluate("message.received", &cls.intent, &mut vars.scope(), clock());
                black_box(ev.outcomes.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decision, scaling);
criterion_main!(benches);
