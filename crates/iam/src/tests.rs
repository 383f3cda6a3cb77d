use std::collections::HashMap;

use super::*;

struct Ctx(HashMap<String, Vec<String>>);

impl Context for Ctx {
    fn get(&self, key: &str) -> Option<Vec<String>> {
        self.0.get(&key.to_ascii_lowercase()).cloned()
    }
}

fn ctx(pairs: &[(&str, &[&str])]) -> Ctx {
    Ctx(pairs
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect())
}

const ALICE: &str = "arn:aws:iam::111111111111:user/alice";
const STREAM: &str = "arn:aws:kinesis:us-east-1:111111111111:stream/orders";

fn request<'a>(action: &'a str, resource: &'a str, context: &'a Ctx) -> Request<'a> {
    Request {
        principal_arn: ALICE,
        principal_account: "111111111111",
        action,
        resource,
        resource_account: "111111111111",
        context,
    }
}

fn identity(text: &str) -> Policy {
    Policy::parse(text, Kind::Identity).unwrap()
}

#[test]
fn allow_deny_and_no_allow() {
    let c = ctx(&[]);
    let read = identity(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kinesis:Get*","kinesis:Describe*"],"Resource":"arn:aws:kinesis:*:111111111111:stream/*"}]}"#,
    );
    assert_eq!(
        authorize(
            std::slice::from_ref(&read),
            None,
            &request("kinesis:GetRecords", STREAM, &c)
        ),
        Ok(())
    );
    assert_eq!(
        authorize(
            std::slice::from_ref(&read),
            None,
            &request("kinesis:getrecords", STREAM, &c)
        ),
        Ok(()),
        "actions are case-insensitive"
    );
    assert_eq!(
        authorize(
            std::slice::from_ref(&read),
            None,
            &request("kinesis:PutRecord", STREAM, &c)
        ),
        Err(Denial::NoIdentityPolicyAllows)
    );
    let deny =
        identity(r#"{"Statement":{"Effect":"Deny","Action":"kinesis:GetRecords","Resource":"*"}}"#);
    assert_eq!(
        authorize(
            &[read.clone(), deny],
            None,
            &request("kinesis:GetRecords", STREAM, &c)
        ),
        Err(Denial::ExplicitDenyInIdentityPolicy),
        "explicit deny wins over allow"
    );
    assert_eq!(
        authorize(&[], None, &request("kinesis:ListStreams", "*", &c)),
        Err(Denial::NoIdentityPolicyAllows)
    );
}

#[test]
fn not_action_and_not_resource() {
    let c = ctx(&[]);
    let all_but_delete = identity(
        r#"{"Statement":[{"Effect":"Allow","NotAction":"kinesis:Delete*","NotResource":"arn:aws:kinesis:*:*:stream/secret"}]}"#,
    );
    let p = std::slice::from_ref(&all_but_delete);
    assert_eq!(
        authorize(p, None, &request("kinesis:PutRecord", STREAM, &c)),
        Ok(())
    );
    assert!(authorize(p, None, &request("kinesis:DeleteStream", STREAM, &c)).is_err());
    let secret = "arn:aws:kinesis:us-east-1:111111111111:stream/secret";
    assert!(authorize(p, None, &request("kinesis:PutRecord", secret, &c)).is_err());
}

#[test]
fn conditions() {
    let policy = identity(
        r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*",
            "Condition":{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","127.0.0.1"]},
                         "DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}}]}"#,
    );
    let p = std::slice::from_ref(&policy);
    let ok = ctx(&[
        ("aws:SourceIp", &["10.1.2.3"]),
        ("aws:CurrentTime", &["2026-11-26T00:00:00Z"]),
    ]);
    assert_eq!(
        authorize(p, None, &request("kinesis:PutRecord", STREAM, &ok)),
        Ok(())
    );
    let wrong_ip = ctx(&[
        ("aws:SourceIp", &["192.168.0.1"]),
        ("aws:CurrentTime", &["2026-11-26T00:00:00Z"]),
    ]);
    assert!(authorize(p, None, &request("kinesis:PutRecord", STREAM, &wrong_ip)).is_err());
    let too_late = ctx(&[
        ("aws:SourceIp", &["127.0.0.1"]),
        ("aws:CurrentTime", &["2031-01-01T00:00:00Z"]),
    ]);
    assert!(authorize(p, None, &request("kinesis:PutRecord", STREAM, &too_late)).is_err());
    let missing = ctx(&[]);
    assert!(
        authorize(p, None, &request("kinesis:PutRecord", STREAM, &missing)).is_err(),
        "absent key: no match"
    );

    let deny_outside = identity(
        r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},
            {"Effect":"Deny","Action":"*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":"127.0.0.0/8"}}}]}"#,
    );
    let p = std::slice::from_ref(&deny_outside);
    assert_eq!(
        authorize(p, None, &request("kinesis:PutRecord", STREAM, &ok)),
        Err(Denial::ExplicitDenyInIdentityPolicy)
    );
    let local = ctx(&[("aws:SourceIp", &["127.0.0.1"])]);
    assert_eq!(
        authorize(p, None, &request("kinesis:PutRecord", STREAM, &local)),
        Ok(())
    );
}

#[test]
fn condition_operators() {
    let check = |condition: &str, c: &Ctx| {
        let text = format!(
            r#"{{"Statement":[{{"Effect":"Allow","Action":"*","Resource":"*","Condition":{condition}}}]}}"#
        );
        let p = identity(&text);
        authorize(
            std::slice::from_ref(&p),
            None,
            &request("kinesis:PutRecord", STREAM, c),
        )
        .is_ok()
    };
    let tags = ctx(&[
        ("aws:ResourceTag/team", &["Data"]),
        ("aws:TagKeys", &["team", "env"]),
        ("aws:SecureTransport", &["false"]),
        ("aws:EpochTime", &["1700000000"]),
    ]);
    assert!(check(
        r#"{"StringEquals":{"aws:ResourceTag/team":"Data"}}"#,
        &tags
    ));
    assert!(!check(
        r#"{"StringEquals":{"aws:ResourceTag/team":"data"}}"#,
        &tags
    ));
    assert!(check(
        r#"{"StringEqualsIgnoreCase":{"aws:ResourceTag/team":"data"}}"#,
        &tags
    ));
    assert!(check(
        r#"{"StringNotEquals":{"aws:ResourceTag/team":["ops","web"]}}"#,
        &tags
    ));
    assert!(check(
        r#"{"StringLike":{"aws:ResourceTag/team":"D*"}}"#,
        &tags
    ));
    assert!(
        check(
            r#"{"StringNotEquals":{"aws:ResourceTag/absent":"x"}}"#,
            &tags
        ),
        "negated operator on an absent key holds"
    );
    assert!(check(
        r#"{"StringEqualsIfExists":{"aws:ResourceTag/absent":"x"}}"#,
        &tags
    ));
    assert!(check(
        r#"{"Null":{"aws:ResourceTag/absent":"true"}}"#,
        &tags
    ));
    assert!(!check(r#"{"Null":{"aws:ResourceTag/team":"true"}}"#, &tags));
    assert!(check(
        r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["team","env","owner"]}}"#,
        &tags
    ));
    assert!(!check(
        r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["team"]}}"#,
        &tags
    ));
    assert!(check(
        r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":["env"]}}"#,
        &tags
    ));
    assert!(check(r#"{"Bool":{"aws:SecureTransport":"false"}}"#, &tags));
    assert!(check(
        r#"{"NumericGreaterThan":{"aws:EpochTime":1600000000}}"#,
        &tags
    ));
    assert!(check(
        r#"{"DateGreaterThan":{"aws:EpochTime":"2020-01-01"}}"#,
        &tags
    ));
    assert!(check(
        r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/*"}}"#,
        &ctx(&[("aws:PrincipalArn", &[ALICE])])
    ));
    assert!(check(
        r#"{"StringEquals":{"aws:ResourceTag/team":"Data"},"Bool":{"aws:SecureTransport":"false"}}"#,
        &tags
    ));
    assert!(!check(
        r#"{"StringEquals":{"aws:ResourceTag/team":"Data"},"Bool":{"aws:SecureTransport":"true"}}"#,
        &tags
    ));
}

#[test]
fn policy_variables_in_resources() {
    let policy = identity(
        r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"arn:aws:kinesis:*:*:stream/${aws:username}-*"}]}"#,
    );
    let p = std::slice::from_ref(&policy);
    let c = ctx(&[("aws:username", &["alice"])]);
    let own = "arn:aws:kinesis:us-east-1:111111111111:stream/alice-events";
    assert_eq!(
        authorize(p, None, &request("kinesis:PutRecord", own, &c)),
        Ok(())
    );
    assert!(authorize(p, None, &request("kinesis:PutRecord", STREAM, &c)).is_err());
}

#[test]
fn resource_policies_and_accounts() {
    let c = ctx(&[]);
    let grant_bob = Policy::parse(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::222222222222:root"},"Action":["kinesis:GetRecords","kinesis:GetShardIterator"],"Resource":"arn:aws:kinesis:us-east-1:111111111111:stream/orders"}]}"#,
        Kind::Resource,
    )
    .unwrap();
    let bob_all =
        identity(r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*"}]}"#);
    let cross = |action: &'static str, identity: &[Policy], resource: Option<&Policy>| {
        let r = Request {
            principal_arn: "arn:aws:iam::222222222222:user/bob",
            principal_account: "222222222222",
            action,
            resource: STREAM,
            resource_account: "111111111111",
            context: &c,
        };
        authorize(identity, resource, &r)
    };
    assert_eq!(
        cross(
            "kinesis:GetRecords",
            std::slice::from_ref(&bob_all),
            Some(&grant_bob)
        ),
        Ok(())
    );
    assert_eq!(
        cross(
            "kinesis:PutRecord",
            std::slice::from_ref(&bob_all),
            Some(&grant_bob)
        ),
        Err(Denial::NoResourcePolicyAllows)
    );
    assert_eq!(
        cross("kinesis:GetRecords", std::slice::from_ref(&bob_all), None),
        Err(Denial::NoResourcePolicyAllows)
    );
    assert_eq!(
        cross("kinesis:GetRecords", &[], Some(&grant_bob)),
        Err(Denial::NoIdentityPolicyAllows),
        "cross-account needs both"
    );

    // Same account: the resource policy alone is enough.
    let grant_alice = Policy::parse(
        &format!(r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":["{ALICE}"]}},"Action":"kinesis:PutRecord","Resource":"{STREAM}"}}]}}"#),
        Kind::Resource,
    )
    .unwrap();
    assert_eq!(
        authorize(
            &[],
            Some(&grant_alice),
            &request("kinesis:PutRecord", STREAM, &c)
        ),
        Ok(())
    );
    let deny_all = Policy::parse(
        r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"kinesis:*","Resource":"*"}]}"#,
        Kind::Resource,
    )
    .unwrap();
    assert_eq!(
        authorize(
            std::slice::from_ref(&bob_all),
            Some(&deny_all),
            &request("kinesis:PutRecord", STREAM, &c)
        ),
        Err(Denial::ExplicitDenyInResourcePolicy)
    );

    // Root is not subject to identity policies in its own account, but a deny still binds.
    let root = Request {
        principal_arn: "arn:aws:iam::111111111111:root",
        ..request("kinesis:DeleteStream", STREAM, &c)
    };
    assert_eq!(authorize(&[], None, &root), Ok(()));
    assert_eq!(
        authorize(&[], Some(&deny_all), &root),
        Err(Denial::ExplicitDenyInResourcePolicy)
    );

    // An assumed-role session matches its role as principal.
    let grant_role = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:role/reader"},"Action":"kinesis:*","Resource":"*"}]}"#,
        Kind::Resource,
    )
    .unwrap();
    let session = Request {
        principal_arn: "arn:aws:sts::111111111111:assumed-role/reader/s1",
        ..request("kinesis:GetRecords", STREAM, &c)
    };
    assert_eq!(authorize(&[], Some(&grant_role), &session), Ok(()));
}

#[test]
fn messages() {
    let c = ctx(&[]);
    let r = request("kinesis:PutRecord", STREAM, &c);
    assert_eq!(
        Denial::NoIdentityPolicyAllows.message(&r),
        "User: arn:aws:iam::111111111111:user/alice is not authorized to perform: kinesis:PutRecord on resource: arn:aws:kinesis:us-east-1:111111111111:stream/orders because no identity-based policy allows the kinesis:PutRecord action"
    );
    assert_eq!(
        Denial::ExplicitDenyInIdentityPolicy.message(&request("kinesis:ListStreams", "*", &c)),
        "User: arn:aws:iam::111111111111:user/alice is not authorized to perform: kinesis:ListStreams with an explicit deny in an identity-based policy"
    );
}

#[test]
fn invalid_documents() {
    let bad = [
        ("not json", Kind::Identity),
        ("[]", Kind::Identity),
        (r#"{"Statement":[]}"#, Kind::Identity),
        (
            r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Maybe","Action":"*","Resource":"*"}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","NotAction":"x:y","Resource":"*"}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"PutRecord","Resource":"*"}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*"}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
            Kind::Resource,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"*","Resource":"*"}}"#,
            Kind::Resource,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringSortOf":{"a":"b"}}}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"not-an-ip"}}}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"soon"}}}}"#,
            Kind::Identity,
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Extra":1}}"#,
            Kind::Identity,
        ),
    ];
    for (text, kind) in bad {
        assert!(Policy::parse(text, kind).is_err(), "accepted: {text}");
    }
}
