//! Policy documents never panic the parser, and whatever parses evaluates without panicking,
//! for identity and resource policies alike.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rivulet_iam::{Context, Kind, Policy, Request, authorize};

struct Keys;

impl Context for Keys {
    fn get(&self, key: &str) -> Option<Vec<String>> {
        match key.to_ascii_lowercase().as_str() {
            "aws:sourceip" => Some(vec!["127.0.0.1".into()]),
            "aws:currenttime" => Some(vec!["2026-11-26T00:00:00Z".into()]),
            "aws:tagkeys" => Some(vec!["team".into(), "env".into()]),
            "aws:username" => Some(vec!["alice".into()]),
            _ => None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for kind in [Kind::Identity, Kind::Resource] {
        let Ok(policy) = Policy::parse(text, kind) else { continue };
        let request = Request {
            principal_arn: "arn:aws:iam::111111111111:user/alice",
            principal_account: "111111111111",
            action: "kinesis:PutRecord",
            resource: "arn:aws:kinesis:us-east-1:222222222222:stream/orders",
            resource_account: "222222222222",
            context: &Keys,
        };
        let identity = std::slice::from_ref(&policy);
        let _ = authorize(identity, Some(&policy), &request);
    }
});
