//! Transport: h2c with prior knowledge (as the JS SDK v3 speaks to an `http://` endpoint),
//! several requests multiplexed on one connection, and a 10 MiB PutRecords over HTTP/1.1.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::util::{AUTH, TestServer, call};

fn request(operation: &str, body: String) -> http::Request<Full<Bytes>> {
    http::Request::post("/")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("Kinesis_20131202.{operation}"))
        .header("x-amz-date", "20260101T000000Z")
        .header("authorization", AUTH)
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

#[tokio::test]
async fn h2c_prior_knowledge_multiplexes_requests() {
    let t = TestServer::start().await;
    let tcp = tokio::net::TcpStream::connect(t.addr)
        .await
        .expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let send = |operation: &'static str, body: String| {
        let mut sender = sender.clone();
        async move {
            let response = sender
                .send_request(request(operation, body))
                .await
                .expect("response");
            assert_eq!(response.version(), http::Version::HTTP_2);
            let status = response.status().as_u16();
            let request_id = response.headers().contains_key("x-amzn-requestid");
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            // Operations without an output (CreateStream) answer an empty body.
            let json = if bytes.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("json")
            };
            assert!(request_id);
            (status, json)
        }
    };
    let (status, _) = send(
        "CreateStream",
        r#"{"StreamName":"h2","ShardCount":2}"#.into(),
    )
    .await;
    assert_eq!(status, 200);
    // Twenty puts in flight at once on one connection.
    let puts: Vec<_> = (0..20)
        .map(|i| {
            send(
                "PutRecord",
                format!(r#"{{"StreamName":"h2","Data":"aGk=","PartitionKey":"k{i}"}}"#),
            )
        })
        .collect();
    for (status, body) in futures_join(puts).await {
        assert_eq!(status, 200, "{body}");
        assert!(
            body["SequenceNumber"]
                .as_str()
                .is_some_and(|s| s.len() > 50)
        );
    }
    let (status, body) = send("ListShards", r#"{"StreamName":"h2"}"#.into()).await;
    assert_eq!(status, 200);
    let mut total = 0;
    for shard in body["Shards"].as_array().expect("shards") {
        let shard_id = shard["ShardId"].as_str().expect("id");
        let (_, it) = send(
            "GetShardIterator",
            format!(
                r#"{{"StreamName":"h2","ShardId":"{shard_id}","ShardIteratorType":"TRIM_HORIZON"}}"#
            ),
        )
        .await;
        let iterator = it["ShardIterator"].as_str().expect("iterator").to_string();
        let (status, page) =
            send("GetRecords", format!(r#"{{"ShardIterator":"{iterator}"}}"#)).await;
        assert_eq!(status, 200);
        total += page["Records"].as_array().map_or(0, Vec::len);
    }
    assert_eq!(total, 20);
    // Errors travel the same way.
    let (status, body) = send("DescribeStream", r#"{"StreamName":"nope"}"#.into()).await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "ResourceNotFoundException");
    t.stop().await;
}

async fn futures_join<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn a_10_mib_put_records_is_admitted() {
    let t = TestServer::start().await;
    let created = call(
        t.addr,
        "CreateStream",
        r#"{"StreamName":"big","ShardCount":1,"MaxRecordSizeInKiB":10240}"#,
    )
    .await;
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    // Ten records of 1 MiB less their partition key: 10 MiB of data, ~13.3 MiB of base64.
    let data = base64::engine::general_purpose::STANDARD.encode(vec![7u8; (1 << 20) - 2]);
    let records: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"Data":"{data}","PartitionKey":"k{i}"}}"#))
        .collect();
    let body = format!(
        r#"{{"StreamName":"big","Records":[{}]}}"#,
        records.join(",")
    );
    assert!(body.len() > 13 << 20);
    let put = call(t.addr, "PutRecords", &body).await;
    assert_eq!(
        put.status,
        200,
        "{}",
        String::from_utf8_lossy(&put.body[..put.body.len().min(300)])
    );
    assert_eq!(put.json()["FailedRecordCount"], 0);
    assert_eq!(put.json()["Records"].as_array().map(Vec::len), Some(10));
    t.stop().await;
}
