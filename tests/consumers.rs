//! Enhanced fan-out consumers through `aws-sdk-kinesis`: register, describe, list, deregister,
//! their lifecycle and limits, and DeleteStream's EnforceConsumerDeletion.

use aws_sdk_kinesis::types::ConsumerStatus;
use rivulet_server::ServerConfig;

use crate::util::{TestServer, client_without_retries, create_stream, error_of};

#[tokio::test]
async fn register_describe_list_deregister() {
    let t = TestServer::start().await;
    let c = &t.client;
    let arn = create_stream(c, "fan").await;
    let registered = c
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("alpha")
        .send()
        .await
        .expect("register");
    let alpha = registered.consumer().expect("consumer");
    assert_eq!(alpha.consumer_name(), "alpha");
    assert_eq!(alpha.consumer_status(), &ConsumerStatus::Creating);
    let alpha_arn = alpha.consumer_arn().to_string();
    let prefix = format!("{arn}/consumer/alpha:");
    let seconds = alpha_arn.strip_prefix(&prefix).expect("ARN format");
    let created = alpha.consumer_creation_timestamp().secs();
    assert_eq!(seconds, created.to_string());

    for name in ["beta", "gamma"] {
        c.register_stream_consumer()
            .stream_arn(&arn)
            .consumer_name(name)
            .send()
            .await
            .expect("register");
    }
    let duplicate = c
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("alpha")
        .send()
        .await
        .expect_err("duplicate");
    assert_eq!(
        error_of(duplicate.into_service_error()),
        (
            "ResourceInUseException".into(),
            "Consumer alpha under stream fan under account 000000000000 already exists.".into()
        )
    );

    // By ARN and by stream ARN + name: the same description, ACTIVE without a delay.
    let by_arn = c
        .describe_stream_consumer()
        .consumer_arn(&alpha_arn)
        .send()
        .await
        .expect("describe by ARN");
    let by_name = c
        .describe_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("alpha")
        .send()
        .await
        .expect("describe by name");
    let d = by_arn.consumer_description().expect("description");
    assert_eq!(d, by_name.consumer_description().expect("description"));
    assert_eq!(d.consumer_status(), &ConsumerStatus::Active);
    assert_eq!(d.stream_arn(), arn);
    assert_eq!(d.consumer_arn(), alpha_arn);

    // Pages of two, in registration order.
    let first = c
        .list_stream_consumers()
        .stream_arn(&arn)
        .max_results(2)
        .send()
        .await
        .expect("list");
    let names: Vec<&str> = first
        .consumers()
        .iter()
        .map(|c| c.consumer_name())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let second = c
        .list_stream_consumers()
        .stream_arn(&arn)
        .next_token(first.next_token().expect("more"))
        .send()
        .await
        .expect("list page 2");
    let names: Vec<&str> = second
        .consumers()
        .iter()
        .map(|c| c.consumer_name())
        .collect();
    assert_eq!(names, ["gamma"]);
    assert!(second.next_token().is_none());
    let bad_token = c
        .list_stream_consumers()
        .stream_arn(&arn)
        .next_token("bm90IGEgdG9rZW4=")
        .send()
        .await
        .expect_err("bad token");
    assert_eq!(
        error_of(bad_token.into_service_error()).0,
        "InvalidArgumentException"
    );

    let summary = c
        .describe_stream_summary()
        .stream_arn(&arn)
        .send()
        .await
        .expect("summary");
    assert_eq!(
        summary
            .stream_description_summary()
            .and_then(|s| s.consumer_count()),
        Some(3)
    );

    // Deleting a stream with consumers needs EnforceConsumerDeletion.
    let refused = c
        .delete_stream()
        .stream_arn(&arn)
        .send()
        .await
        .expect_err("consumers registered");
    assert_eq!(
        error_of(refused.into_service_error()),
        (
            "ResourceInUseException".into(),
            "DeleteStream can\u{2019}t delete 000000000000:fan because there are consumers \
             associated with this data stream. To delete fan anyway, set the \
             EnforceConsumerDeletion parameter to true to force the deletion of all the \
             consumers that are associated with it."
                .into()
        )
    );

    c.deregister_stream_consumer()
        .consumer_arn(&alpha_arn)
        .send()
        .await
        .expect("deregister by ARN");
    c.deregister_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("beta")
        .send()
        .await
        .expect("deregister by name");
    let gone = c
        .describe_stream_consumer()
        .consumer_arn(&alpha_arn)
        .send()
        .await
        .expect_err("deregistered");
    assert_eq!(
        error_of(gone.into_service_error()).0,
        "ResourceNotFoundException"
    );
    let both = c
        .describe_stream_consumer()
        .consumer_arn(&alpha_arn)
        .consumer_name("alpha")
        .send()
        .await
        .expect_err("ARN and name together");
    assert_eq!(
        error_of(both.into_service_error()).0,
        "InvalidArgumentException"
    );
    c.delete_stream()
        .stream_arn(&arn)
        .enforce_consumer_deletion(true)
        .send()
        .await
        .expect("delete with consumers");
    let missing = c
        .list_stream_consumers()
        .stream_arn(&arn)
        .send()
        .await
        .expect_err("stream gone");
    assert_eq!(
        error_of(missing.into_service_error()),
        (
            "ResourceNotFoundException".into(),
            "Stream fan under account 000000000000 not found.".into()
        )
    );
    t.stop().await;
}

async fn status(
    c: &aws_sdk_kinesis::Client,
    arn: &str,
    name: &str,
) -> Result<Option<ConsumerStatus>, String> {
    c.describe_stream_consumer()
        .stream_arn(arn)
        .consumer_name(name)
        .send()
        .await
        .map(|d| {
            d.consumer_description()
                .map(|d| d.consumer_status().clone())
        })
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn lifecycle_and_limits() {
    let mut config = ServerConfig::for_tests();
    config.engine.create_stream_ms = 1_200;
    config.engine.delete_stream_ms = 1_200;
    let t = TestServer::with_config(config).await;
    let c = &client_without_retries(t.addr);
    let arn = create_stream(c, "slow").await;
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    for i in 0..5 {
        c.register_stream_consumer()
            .stream_arn(&arn)
            .consumer_name(format!("c{i}"))
            .send()
            .await
            .expect("register");
    }
    // Five CREATING at once is the most.
    let sixth = c
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("c5")
        .send()
        .await
        .expect_err("too many creating");
    assert_eq!(
        error_of(sixth.into_service_error()).0,
        "LimitExceededException"
    );
    assert_eq!(
        status(c, &arn, "c0").await.expect("describe"),
        Some(ConsumerStatus::Creating)
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    assert_eq!(
        status(c, &arn, "c0").await.expect("describe"),
        Some(ConsumerStatus::Active)
    );
    // Up to 20 per stream.
    for i in 5..20 {
        if i % 5 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
        }
        c.register_stream_consumer()
            .stream_arn(&arn)
            .consumer_name(format!("c{i}"))
            .send()
            .await
            .expect("register");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let twenty_first = c
        .register_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("c20")
        .send()
        .await
        .expect_err("over 20");
    assert_eq!(
        error_of(twenty_first.into_service_error()).0,
        "LimitExceededException"
    );
    c.deregister_stream_consumer()
        .stream_arn(&arn)
        .consumer_name("c0")
        .send()
        .await
        .expect("deregister");
    assert_eq!(
        status(c, &arn, "c0").await.expect("describe"),
        Some(ConsumerStatus::Deleting)
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    assert!(status(c, &arn, "c0").await.is_err(), "gone after the delay");
    t.stop().await;
}
