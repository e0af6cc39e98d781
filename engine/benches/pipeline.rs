//! The pipeline per message in process (load context + classify + flow + rules + actions,
//! everything but the commit), on a real SQLite file with the example pack.
//!
//! Run: `cargo bench -p switchyard-engine --bench pipeline`; end-to-end throughput is
//! `cargo bench -p switchyard-engine --bench e2e`. Figures in benches/README.md.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use switchyard_engine::model::Inbound;
use switchyard_engine::ports::{Lookup, LookupError};
use switchyard_engine::store::sqlite::SqliteStore;
use switchyard_engine::store::Store;
use switchyard_engine::Engine;
use switchyard_rules::pack::LookupAction;

struct Orders;

#[async_trait]
impl Lookup for Orders {
    async fn call(
        &self,
        _: &str,
        _: LookupAction,
        key: &Value,
        _: Option<&str>,
    ) -> Result<Option<Value>, LookupError> {
        Ok(Some(
            json!({ "name": format!("#{}", key.as_str().unwrap_or("10234")), "status": "dispatched", "tracking_url": "https://t.example/1" }),
        ))
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, rows) = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&format!("sqlite://{}", dir.path().join("b.db").display()))
                .await
                .unwrap(),
        );
        let pack = switchyard_rules::load_dir(Path::new("../examples/pk-ecommerce"))
            .unwrap()
            .pack
            .unwrap();
        let engine = Engine::new(store.clone(), Arc::new(pack), Arc::new(Orders));
        let texts = [
            "mera order kahan hai #10234",
            "parcel toota hua aaya hai",
            "size chota hai exchange karna hai",
            "hello",
            "do you have this in maroon",
        ];
        let events: Vec<Inbound> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Inbound::Message {
                channel: "whatsapp".into(),
                from: format!("92300000000{i}"),
                name: None,
                phone: Some(format!("+92300000000{i}")),
                provider_id: format!("b{i}"),
                kind: "text".into(),
                text: t.to_string(),
                choice: None,
                payload: Value::Null,
            })
            .collect();
        store.ingest(events, 0).await.unwrap();
        let rows = store.pending_inbox(0, 10).await.unwrap();
        // Create the conversations once, so the benchmark measures the steady state.
        for r in &rows {
            drop(engine.decide(r, 0).await.unwrap());
        }
        (engine, rows)
    });
    let mut g = c.benchmark_group("pipeline");
    for (i, row) in rows.iter().enumerate() {
        g.bench_function(format!("decide_excluding_commit/{i}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    black_box(
                        engine
                            .decide(row, 1_800_000_000_000)
                            .await
                            .unwrap()
                            .changeset
                            .messages
                            .len(),
                    )
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
