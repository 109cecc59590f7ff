//! Wake-ups between server processes (`Store::notify`, `BusListener`): on PostgreSQL a listener
//! gets every payload in order, a payload over the limit is refused and sends nothing; on SQLite
//! (one process) `notify` does nothing.

use std::time::Duration;

use cronium_store::{BusListener, MAX_PAYLOAD};

use crate::harness::Ctx;

conformance!(notify_reaches_listeners_in_order);

async fn notify_reaches_listeners_in_order(t: Ctx) {
    let s = &t.store;
    if !s.can_notify() {
        assert!(t.url.starts_with("sqlite:"));
        s.notify("chan", &["x".into()]).await.expect("a no-op");
        return;
    }
    let mut l = BusListener::connect(&t.url, "chan").await.expect("listen");
    s.notify("chan", &["one".into(), "two".into()])
        .await
        .unwrap();
    s.notify("other", &["elsewhere".into()]).await.unwrap();
    let big = "x".repeat(MAX_PAYLOAD + 1);
    let err = s
        .notify("chan", &["lost".into(), big])
        .await
        .expect_err("too big");
    assert!(err.to_string().contains("payload"), "{err}");
    s.notify("chan", &["three".into()]).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = tokio::time::timeout(Duration::from_secs(5), l.next())
            .await
            .expect("a notification")
            .expect("listener works")
            .expect("connection kept");
        got.push(p);
    }
    assert_eq!(got, ["one", "two", "three"]);
}
