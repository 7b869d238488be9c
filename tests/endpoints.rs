mod common;
use common::*;

#[test]
fn smoke() {
    let s = Server::start(&[]);
    let (mut ws, hello) = s.subscribe("/ws/dashboard/loc-1");
    assert_eq!(hello["channel"], "dashboard");
    let (st, body) = s.publish(&event("dashboard", "loc-1", "A", serde_json::json!(1)).to_string());
    assert_eq!(st, 202, "{body}");
    let ev = recv_json(&mut ws);
    assert_eq!(ev["seq"], 1);
}
