//! The client's pending window, and the client against a scripted server on loopback: the
//! handshake's events, pipelined submits answered in order, long lines and a close ending it.

use super::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[test]
fn pending_window() {
    let mut p = Pending::default();
    for id in 5..10 {
        p.add(id, if id % 2 == 0 { Kind::Submit } else { Kind::Other });
    }
    assert_eq!(p.take(4), None);
    assert_eq!(p.take(7), Some(Kind::Other));
    assert_eq!(p.take(7), None);
    assert_eq!(p.take(5), Some(Kind::Other));
    assert_eq!(p.take(6), Some(Kind::Submit));
    assert_eq!((p.base, p.slots.len()), (8, 2), "answered ids at the front are dropped");
    assert_eq!(p.take(10), None);
    assert_eq!(p.len(), 2);
    let mut p = Pending::default();
    for id in 1..=(MAX_PENDING as u64 + 3) {
        p.add(id, Kind::Submit);
    }
    assert_eq!(p.slots.len(), MAX_PENDING);
    assert_eq!(p.take(3), None, "the oldest are forgotten");
    assert_eq!(p.take(4), Some(Kind::Submit));
}

/// A scripted server on loopback: answers each request line with `answer(line)`'s lines.
async fn server(answer: fn(&Value) -> Vec<String>) -> (String, tokio::task::JoinHandle<Vec<Value>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            // A raw line that is not JSON is kept as a string.
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            for out in answer(&v) {
                let _ = w.write_all(format!("{out}\n").as_bytes()).await;
            }
            seen.push(v);
        }
        seen
    });
    (addr, task)
}

fn pool(v: &Value) -> Vec<String> {
    let id = &v["id"];
    match v["method"].as_str().unwrap_or("") {
        "mining.configure" => {
            vec![format!(
                r#"{{"id":{id},"result":{{"version-rolling":true,"version-rolling.mask":"1fffe000"}},"error":null}}"#
            )]
        }
        // ckpool's order: the first notify before the authorize answer.
        "mining.authorize" => vec![
            r#"{"id":null,"method":"mining.set_difficulty","params":[2]}"#.into(),
            format!(
                r#"{{"id":null,"method":"mining.notify","params":["1","{}","01000000010000","00000000",[],"20000000","207fffff","65000000",true]}}"#,
                "00".repeat(32)
            ),
            format!(r#"{{"id":{id},"result":true,"error":null}}"#),
        ],
        "mining.subscribe" => vec![format!(r#"{{"id":{id},"result":[[],"0a0b0c0d",8],"error":null}}"#)],
        // Odd nonces are refused, and answered after the next share (out of order).
        "mining.submit" if v["params"][4].as_str().unwrap().ends_with(['1', '3']) => vec![],
        "mining.submit" => {
            let nonce = u32::from_str_radix(v["params"][4].as_str().unwrap(), 16).unwrap();
            vec![
                format!(r#"{{"id":{id},"result":true,"error":null}}"#),
                format!(
                    r#"{{"id":{},"result":null,"error":[23,"Low difficulty share",null]}}"#,
                    id.as_u64().unwrap() - 1
                ),
            ]
            .into_iter()
            .take(if nonce == 0 { 1 } else { 2 })
            .collect()
        }
        _ if id.is_null() => vec![],
        _ => vec![format!(r#"{{"id":{id},"result":null,"error":[20,"Method not supported",null]}}"#)],
    }
}

#[tokio::test]
async fn handshake_events_and_pipelined_submits() {
    let (addr, server) = server(pool).await;
    let mut c = Client::connect(&addr).await.unwrap();
    assert_eq!(c.configure(0xffff_ffff).await.unwrap(), 0x1fffe000);
    let s = c.subscribe("test/1", Some("ab\"c")).await.unwrap();
    assert_eq!(s, Subscription { extranonce1: vec![10, 11, 12, 13], extranonce2_size: 8 });
    assert_eq!(c.authorize("w", "x").await.unwrap(), Ok(()));
    // What came before the authorize answer is handed out after it, in order.
    assert_eq!(c.next_event().await.unwrap(), Event::SetDifficulty(Difficulty::from_integer(2)));
    let Event::Notify(n) = c.next_event().await.unwrap() else { panic!("notify expected") };
    assert_eq!(n.job(1, 4, 8).unwrap().job_id, "1");
    let share = |nonce: &'static str| Submit {
        job_id: "1",
        extranonce2: "0000000000000000",
        ntime: "65000000",
        nonce,
        version_bits: Some("00002000"),
    };
    assert_eq!(c.submit("w", &share("00000000")).await.unwrap(), Ok(()));
    // A window of four: answers come for 3 before 2 and 5 before 4, each matched by id.
    let ids: Vec<u64> =
        ["00000001", "00000002", "00000003", "00000004"].map(|n| c.send_submit("w", &share(n))).to_vec();
    assert_eq!(c.pending(), 4);
    let mut got = Vec::new();
    while got.len() < 4 {
        match tokio::time::timeout(std::time::Duration::from_secs(10), c.next_event()).await.unwrap().unwrap() {
            Event::Submitted { id, result } => got.push((id, result.map_err(|r| r.code))),
            other => panic!("{other:?}"),
        }
    }
    let want = vec![(ids[1], Ok(())), (ids[0], Err(Some(23))), (ids[3], Ok(())), (ids[2], Err(Some(23)))];
    assert_eq!(got, want);
    assert_eq!(c.pending(), 0);
    let id = c.send_request("mining.extranonce.subscribe", &serde_json::json!([]));
    match c.next_event().await.unwrap() {
        Event::Replied { id: got, result: Err(r) } => assert_eq!((got, r.code), (id, Some(20))),
        other => panic!("{other:?}"),
    }
    c.suggest_difficulty("0.5".parse().unwrap());
    c.send_raw(b"garbage\n");
    c.flush().await.unwrap();
    drop(c);
    let seen = server.await.unwrap();
    assert_eq!(seen[1]["params"], serde_json::json!(["test/1", "ab\"c"]));
    assert_eq!(seen[4]["params"][5], "00002000");
    let suggest = seen.iter().find(|v| v["method"] == "mining.suggest_difficulty").unwrap();
    assert_eq!(suggest["id"], Value::Null);
    assert_eq!(suggest["params"], serde_json::json!([0.5]));
    assert_eq!(seen.last().unwrap(), "garbage");
}

#[tokio::test]
async fn long_lines_and_close_end_the_stream() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"{\"id\":null,\"method\":\"x\",\"params\":[]}\n").await.unwrap();
        s.write_all(&vec![b'x'; MAX_LINE + 10]).await.unwrap();
    });
    let mut c = Client::connect(addr).await.unwrap();
    assert!(matches!(c.next_event().await.unwrap(), Event::Method { .. }));
    assert!(matches!(c.next_line().await, Err(ClientError::TooLong(_))));
    srv.await.unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = tokio::spawn(async move { drop(l.accept().await.unwrap()) });
    let mut c = Client::connect(addr).await.unwrap();
    srv.await.unwrap();
    assert!(matches!(c.next_event().await, Err(ClientError::Closed)));
}
