//! Sequence numbers and shard iterators on the wire, shaped like the live service's
//! (AWS-BEHAVIOUR.md, "Recorded answers in detail", section 6).

use base64::Engine as _;

use crate::util::{TestServer, aws_error as error, call};

/// A decimal string as lowercase hex, by long division.
fn dec_to_hex(decimal: &str) -> String {
    let mut digits: Vec<u32> = decimal.bytes().map(|b| u32::from(b - b'0')).collect();
    let mut out = Vec::new();
    while digits.iter().any(|&d| d != 0) {
        let mut remainder = 0;
        for d in &mut digits {
            let value = remainder * 10 + *d;
            *d = value / 16;
            remainder = value % 16;
        }
        out.push(char::from_digit(remainder, 16).unwrap());
    }
    out.iter().rev().collect()
}

/// A hex string as decimal.
fn hex_to_dec(hex: &str) -> String {
    let mut digits: Vec<u32> = Vec::new(); // little-endian decimal digits
    for c in hex.chars() {
        let mut carry = c.to_digit(16).unwrap();
        for d in &mut digits {
            let value = *d * 16 + carry;
            *d = value % 10;
            carry = value / 10;
        }
        while carry > 0 {
            digits.push(carry % 10);
            carry /= 10;
        }
    }
    digits
        .iter()
        .rev()
        .map(|d| char::from_digit(*d, 10).unwrap())
        .collect()
}

/// Whether `hex` is `2` · 9 hex · `k` · 16 hex · `000` · 8 hex · `0000000k` · `2` for a shard
/// `k` below 16 (the recorded pattern).
fn has_recorded_shape(hex: &str, k: u32) -> bool {
    let k = char::from_digit(k, 16).unwrap();
    let b = hex.as_bytes();
    hex.len() == 47
        && hex.bytes().all(|c| c.is_ascii_hexdigit())
        && hex.starts_with("20")
        && b[10] as char == k
        && &hex[27..30] == "000"
        && hex[38..] == format!("0000000{k}2")
}

async fn create(addr: std::net::SocketAddr, name: &str, shards: u32) {
    let created = call(
        addr,
        "CreateStream",
        &format!(r#"{{"StreamName":"{name}","ShardCount":{shards}}}"#),
    )
    .await;
    assert_eq!(created.status, 200);
}

/// The first hash key of shard `k` of `n`.
fn hash_key_of(k: u32, n: u32) -> String {
    (u128::MAX / u128::from(n) * u128::from(k)).to_string()
}

#[tokio::test]
async fn sequence_numbers_and_iterators_have_the_recorded_layout() {
    let t = TestServer::start().await;
    create(t.addr, "s", 12).await;
    for k in [0u32, 1, 11] {
        let key = hash_key_of(k, 12);
        let entries: Vec<String> = (0..3)
            .map(|_| format!(r#"{{"Data":"aGk=","PartitionKey":"a","ExplicitHashKey":"{key}"}}"#))
            .collect();
        let put = call(
            t.addr,
            "PutRecords",
            &format!(r#"{{"StreamName":"s","Records":[{}]}}"#, entries.join(",")),
        )
        .await;
        assert_eq!(put.status, 200);
        let body = put.json();
        let numbers: Vec<String> = body["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| dec_to_hex(r["SequenceNumber"].as_str().unwrap()))
            .collect();
        for hex in &numbers {
            assert!(has_recorded_shape(hex, k), "shard {k}: {hex}");
        }
        // One shard's records in one call get consecutive counters.
        let counter = |hex: &str| u64::from_str_radix(&hex[11..27], 16).unwrap();
        assert_eq!(counter(&numbers[1]), counter(&numbers[0]) + 1);
        assert_eq!(counter(&numbers[2]), counter(&numbers[1]) + 1);

        let shard = format!("shardId-{k:012}");
        let iterator = call(
            t.addr,
            "GetShardIterator",
            &format!(
                r#"{{"StreamName":"s","ShardId":"{shard}","ShardIteratorType":"TRIM_HORIZON"}}"#
            ),
        )
        .await;
        let text = iterator.json()["ShardIterator"]
            .as_str()
            .unwrap()
            .to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .unwrap();
        assert_eq!(bytes[..8], [0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(
            bytes.len() >= 152 && (bytes.len() - 152) % 16 == 0,
            "{}",
            bytes.len()
        );
        let read = call(
            t.addr,
            "GetRecords",
            &format!(r#"{{"ShardIterator":"{text}"}}"#),
        )
        .await;
        assert_eq!(read.json()["Records"].as_array().unwrap().len(), 3);
    }
    let described = call(t.addr, "DescribeStream", r#"{"StreamName":"s"}"#).await;
    let shards = described.json()["StreamDescription"]["Shards"].clone();
    let starting = dec_to_hex(
        shards[11]["SequenceNumberRange"]["StartingSequenceNumber"]
            .as_str()
            .unwrap(),
    );
    assert!(has_recorded_shape(&starting, 11), "{starting}");
    t.stop().await;
}

#[tokio::test]
async fn numbers_sent_by_clients_are_decoded_as_aws_decodes_them() {
    let t = TestServer::start().await;
    create(t.addr, "d", 1).await;
    let put = call(
        t.addr,
        "PutRecord",
        r#"{"StreamName":"d","Data":"aGk=","PartitionKey":"a"}"#,
    )
    .await;
    let ours = dec_to_hex(put.json()["SequenceNumber"].as_str().unwrap());
    assert!(has_recorded_shape(&ours, 0), "{ours}");
    let iterator_at = |number: String| {
        format!(
            r#"{{"StreamName":"d","ShardId":"shardId-000000000000","ShardIteratorType":"AT_SEQUENCE_NUMBER","StartingSequenceNumber":"{number}"}}"#
        )
    };
    let put_after = |number: &str| {
        format!(
            r#"{{"StreamName":"d","Data":"aGk=","PartitionKey":"a","SequenceNumberForOrdering":"{number}"}}"#
        )
    };

    // The counter's top hex digit at 8 or more: a number the service never issues.
    let top = hex_to_dec(&format!("{}8{}", &ours[..11], &ours[12..]));
    let refused = call(t.addr, "GetShardIterator", &iterator_at(top.clone())).await;
    assert_eq!(
        error(&refused),
        (
            400,
            "InvalidArgumentException".into(),
            format!(
                "StartingSequenceNumber {top} used in GetShardIterator on shard \
                 shardId-000000000000 in stream d under account 000000000000 is invalid."
            )
        )
    );
    let refused = call(t.addr, "PutRecord", &put_after(&top)).await;
    assert_eq!(
        error(&refused),
        (
            400,
            "InvalidArgumentException".into(),
            format!(
                "ExclusiveMinimumSequenceNumber {top} used in PutRecord on stream d under \
                 account 000000000000 is invalid."
            )
        )
    );

    // The shard-index field is signed.
    let negative = hex_to_dec(&format!("{}80000000{}", &ours[..38], &ours[46..]));
    let refused = call(t.addr, "GetShardIterator", &iterator_at(negative.clone())).await;
    assert_eq!(
        error(&refused),
        (
            400,
            "InvalidArgumentException".into(),
            "Invalid StartingSequenceNumber. It encodes shardId--02147483648, while it was used \
             in a call to a shard with shardId-000000000000"
                .into()
        )
    );
    // PutRecord takes it, and a version-1 number, and answers with its own shard's numbers.
    let version1 = hex_to_dec(&format!("{}1", &ours[..46]));
    for ordering in [negative, version1] {
        let accepted = call(t.addr, "PutRecord", &put_after(&ordering)).await;
        assert_eq!(accepted.status, 200, "{:?}", accepted.json());
        let number = dec_to_hex(accepted.json()["SequenceNumber"].as_str().unwrap());
        assert!(has_recorded_shape(&number, 0), "{number}");
        assert_eq!(accepted.json()["ShardId"], "shardId-000000000000");
    }

    // Our own number reads back.
    let at = call(t.addr, "GetShardIterator", &iterator_at(hex_to_dec(&ours))).await;
    assert_eq!(at.status, 200);
    t.stop().await;
}

#[test]
fn hex_conversions_round_trip() {
    let n = "49590338271490256608559692538361571095921575989136588898";
    assert_eq!(hex_to_dec(&dec_to_hex(n)), n);
    assert_eq!(dec_to_hex("255"), "ff");
}
