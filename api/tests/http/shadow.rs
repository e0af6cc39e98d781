//! Shadow mode over HTTP: a candidate pack decides the live events too — counted, listed,
//! never sent — and is promoted like a reload.

use super::languages::{desk, says, told};
use super::*;

async fn admin(
    method: reqwest::Method,
    base: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client()
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_in_shadow_shows_its_differences_sends_nothing_and_is_promoted() {
    let d = desk(true, vec![]).await;
    let get = reqwest::Method::GET;
    let (st, _) = admin(get.clone(), &d.base, "/api/v1/rules/shadow", None).await;
    assert_eq!(st, 404, "no shadow yet");
    // The candidate: complaints go to supervisors.
    let cand = d._dir.path().join("candidate");
    std::fs::create_dir(&cand).unwrap();
    for e in std::fs::read_dir(&d.pack_dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, cand.join(p.file_name().unwrap())).unwrap();
    }
    let rules = std::fs::read_to_string(cand.join("rules.yaml")).unwrap();
    std::fs::write(
        cand.join("rules.yaml"),
        rules.replace(
            "      - route: { queue: complaints }",
            "      - route: { queue: supervisors }",
        ),
    )
    .unwrap();
    // A candidate with an error is refused, and nothing runs.
    let broken = d._dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("p.yaml"),
        "settings: { default_queue: nowhere }\n",
    )
    .unwrap();
    let (st, v) = admin(
        reqwest::Method::POST,
        &d.base,
        "/api/v1/rules/shadow",
        Some(json!({ "dir": broken })),
    )
    .await;
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("invalid"),
        "{v}"
    );
    let (st, v) = admin(
        reqwest::Method::POST,
        &d.base,
        "/api/v1/rules/shadow",
        Some(json!({ "dir": cand })),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let candidate = v["candidate"].as_str().unwrap().to_string();
    assert_ne!(candidate, v["serving"].as_str().unwrap());
    // Live traffic: a complaint (the candidate routes it elsewhere) and a greeting (the same).
    says(&d, "923005550001", "wamid.s1", "parcel toota hua aaya hai").await;
    says(&d, "923005550002", "wamid.s2", "assalam o alaikum").await;
    let mut report = Value::Null;
    for _ in 0..100 {
        let (_, v) = admin(get.clone(), &d.base, "/api/v1/rules/shadow", None).await;
        if v["events"] == 2 {
            report = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(report["events"], 2, "{report}");
    assert_eq!(report["differing"], 1, "{report}");
    assert_eq!(report["by_kind"], json!({ "routes": 1 }), "{report}");
    let diff = &report["recent"][0];
    assert_eq!(diff["old"]["conversation"], "whatsapp:923005550001");
    assert_eq!(
        (diff["old"]["queue"].as_str(), diff["new"]["queue"].as_str()),
        (Some("complaints"), Some("supervisors"))
    );
    assert!(
        diff["new_trace"]
            .as_str()
            .unwrap()
            .contains("route supervisors"),
        "{diff}"
    );
    // Nothing of the shadow was sent: each customer got the live pack's one reply.
    assert_eq!(told(&d, "923005550001", 1).await.len(), 1);
    assert_eq!(told(&d, "923005550002", 1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(d.channel.sent().len(), 2, "{:?}", d.channel.sent());
    // Counted for Prometheus.
    let metrics = client()
        .get(format!("{}/metrics", d.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_shadow_events_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_shadow_differences_total{kind=\"routes\"} 1"),
        "{metrics}"
    );
    // Promoted: the candidate serves, the shadow stops; the next complaint goes to supervisors.
    let (st, v) = admin(
        reqwest::Method::POST,
        &d.base,
        "/api/v1/rules/shadow/promote",
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["hash"], candidate.as_str());
    assert_eq!(d.runtime.engine.pack().hash, candidate);
    let (st, _) = admin(get.clone(), &d.base, "/api/v1/rules/shadow", None).await;
    assert_eq!(st, 404);
    says(
        &d,
        "923005550003",
        "wamid.s3",
        "the shirt is torn, worst quality",
    )
    .await;
    told(&d, "923005550003", 1).await;
    let (_, v) = admin(get, &d.base, "/api/v1/conversations?q=923005550003", None).await;
    assert_eq!(v["conversations"][0]["queue"], "supervisors", "{v}");
}
