//! The HTTP front: envelope checks, routing by `X-Amz-Target`, body limits, response headers.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use rivulet_engine::Engine;
use rivulet_protocol::{AwsError, Format, Media};

use crate::api;
use crate::config::BODY_BYTES_MAX;
use crate::subscribe::{self, EventBody};

/// A response body: a whole document, or a SubscribeToShard event stream.
pub type Body = Either<Full<Bytes>, EventBody>;

/// The `X-Amz-Target` prefix of every Kinesis operation.
const TARGET_PREFIX: &str = "Kinesis_20131202.";
const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-amzn-requestid");
const ID_2: header::HeaderName = header::HeaderName::from_static("x-amz-id-2");
/// Headers a browser may read from our responses.
const EXPOSE_HEADERS: &str = "x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,\
                              x-amzn-ErrorMessage,Date";

/// Epoch milliseconds: the one place the server reads the clock for a request.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unique, unpredictable-enough request ids without a system call per request: a counter
/// mixed (SplitMix64's finaliser) with a seed drawn once from the OS.
fn id_words<const N: usize>() -> [u64; N] {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        u64::from_le_bytes(bytes)
    });
    let base = COUNTER.fetch_add(N as u64, std::sync::atomic::Ordering::Relaxed);
    std::array::from_fn(|i| {
        let mut z = seed.wrapping_add((base + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// `x-amzn-RequestId`: a UUID, on every answer.
fn request_id_header(headers: &mut HeaderMap) {
    let words = id_words::<2>();
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&words[0].to_le_bytes());
    random[8..].copy_from_slice(&words[1].to_le_bytes());
    let request_id = uuid::Builder::from_random_bytes(random).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = request_id.hyphenated().encode_lower(&mut text);
    if let Ok(value) = HeaderValue::from_str(text) {
        headers.insert(REQUEST_ID, value);
    }
}

/// Bytes of an `x-amz-id-2` before base64: AWS's are 64–80, typically 72 (96 characters).
const ID2_BYTES: usize = 72;

/// `x-amzn-RequestId` and `x-amz-id-2`, on every answer but a CORS preflight.
fn request_id_headers(headers: &mut HeaderMap) {
    let words = id_words::<{ ID2_BYTES / 8 }>();
    let mut id2 = [0u8; ID2_BYTES];
    for (chunk, word) in id2.chunks_mut(8).zip(&words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    request_id_header(headers);
    let mut text = [0u8; ID2_BYTES / 3 * 4];
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(id2, &mut text)
        .unwrap_or(0);
    if let Ok(value) = HeaderValue::from_bytes(&text[..written]) {
        headers.insert(ID_2, value);
    }
}

/// A response with AWS's request-id headers and `status`, around `body`.
fn with_request_ids(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    request_id_headers(response.headers_mut());
    response
}

fn respond(
    status: u16,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    cors: bool,
) -> Response<Body> {
    respond_with(
        status,
        content_type,
        Either::Left(Full::new(Bytes::from(body))),
        cors,
    )
}

/// A response with AWS's request-id headers (and CORS headers for browsers) around `body`;
/// AWS's XML envelope answers carry no `Content-Type`.
fn respond_with(
    status: u16,
    content_type: Option<&'static str>,
    body: Body,
    cors: bool,
) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = with_request_ids(status, body);
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if cors {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    response
}

/// An error in the request's format. A top-level `InternalFailure` goes out without its
/// message, as AWS sends it (callers log the message).
fn error_response(format: Format, error: &AwsError, cors: bool) -> Response<Body> {
    let body = if error.code == "InternalFailure" && error.message.is_some() {
        let bare = AwsError {
            message: None,
            ..error.clone()
        };
        rivulet_protocol::encode_error(format, &bare)
    } else {
        rivulet_protocol::encode_error(format, error)
    };
    respond(error.status, Some(format.content_type()), body, cors)
}

/// The 403 XML answer (non-POST; unknown media type without a `Service.Operation` target).
fn access_denied(cors: bool) -> Response<Body> {
    let (status, body) = rivulet_protocol::envelope_access_denied();
    respond(status, None, body.to_vec(), cors)
}

/// The 404 XML answer (unknown media type with a `Service.Operation` target).
fn unknown_operation_xml(cors: bool) -> Response<Body> {
    let (status, body) = rivulet_protocol::envelope_unknown_operation();
    respond(status, None, body.to_vec(), cors)
}

/// A legacy Coral envelope answer to plain `application/json`.
fn coral(status: u16, exception: &str, cors: bool) -> Response<Body> {
    let body = rivulet_protocol::coral_envelope(exception);
    respond(
        status,
        Some(rivulet_protocol::CORAL_CONTENT_TYPE),
        body,
        cors,
    )
}

/// A CORS preflight (`OPTIONS` with `Origin`): the requested method and headers are allowed as
/// asked, each only when asked; no `x-amz-id-2`, no `Content-Type`.
fn preflight(headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
    let out = response.headers_mut();
    request_id_header(out);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("172800"),
    );
    if let Some(method) = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD) {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, method.clone());
    }
    if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// The Kinesis operation an `X-Amz-Target` names, if it names one of the model.
fn operation_of(target: Option<&str>) -> Option<&str> {
    target?
        .strip_prefix(TARGET_PREFIX)
        .filter(|op| rivulet_protocol::is_operation(op))
}

/// Whether a target has the `Service.Operation` form (`Kinesis_20131202.` has not).
fn has_operation_form(target: Option<&str>) -> bool {
    target
        .and_then(|t| t.split_once('.'))
        .is_some_and(|(service, operation)| !service.is_empty() && !operation.is_empty())
}

/// Checks that the request carries some SigV4 authentication, as AWS does once the envelope
/// is sound. Signatures themselves are verified later, with `--auth sigv4`. Query
/// authentication applies when an `X-Amz-Algorithm` parameter is present, even empty; each of
/// its parameters counts as missing when absent or empty.
fn check_auth(headers: &HeaderMap, query: Option<&str>) -> Result<(), AwsError> {
    let query_value = |name: &str| {
        query.and_then(|q| {
            q.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key == name).then_some(value)
            })
        })
    };
    let query_has = |name: &str| query_value(name).is_some_and(|value| !value.is_empty());
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let query_auth = query_value("X-Amz-Algorithm").is_some();
    match (auth, query_auth) {
        (Some(_), true) => Err(AwsError::new(
            "InvalidSignatureException",
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP \
             header.",
        )),
        (None, false) => Err(AwsError::new(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )),
        (Some(auth), false) => {
            let mut problems = Vec::new();
            for (param, key) in [
                ("Credential", "Credential="),
                ("Signature", "Signature="),
                ("SignedHeaders", "SignedHeaders="),
            ] {
                if !auth.contains(key) {
                    problems.push(format!(
                        "Authorization header requires '{param}' parameter."
                    ));
                }
            }
            if !headers.contains_key("x-amz-date") && !headers.contains_key(header::DATE) {
                problems.push(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a \
                     'Date' header."
                        .into(),
                );
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(AwsError::new(
                    "IncompleteSignatureException",
                    format!("{} Authorization={auth}", problems.join(" ")),
                ))
            }
        }
        (None, true) => {
            let mut problems = Vec::new();
            for param in [
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Signature",
                "X-Amz-SignedHeaders",
                "X-Amz-Date",
            ] {
                if !query_has(param) {
                    problems.push(format!(
                        "AWS query-string parameters must include '{param}'."
                    ));
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(AwsError::new(
                    "IncompleteSignatureException",
                    format!(
                        "{} Re-examine the query-string parameters.",
                        problems.join(" ")
                    ),
                ))
            }
        }
    }
}

/// Serves `/_rivulet/…` (GET and HEAD only; the prefix is ours, so unknown paths are 404s).
/// `viewer` is the signed-in principal under `--auth sigv4`: each page asks it for the Kinesis
/// or CloudWatch action the page needs.
async fn observability(
    request: &Request<Incoming>,
    accounts: &std::collections::HashMap<String, Arc<Engine>>,
    own: &str,
    alarms: &crate::alarms::Alarms,
    stopping: bool,
    viewer: Option<crate::console::Viewer<'_>>,
    node: Option<&crate::console::Node>,
) -> Response<Body> {
    let page = if matches!(*request.method(), Method::GET | Method::HEAD) {
        match crate::console::page(request.uri(), accounts, own, now_ms(), viewer, node).await {
            Some(page) => Some(page),
            None => {
                let path = request.uri().path();
                crate::observe::page(path, accounts, own, alarms, stopping, viewer).await
            }
        }
    } else {
        Some(crate::observe::Page::json(
            405,
            &serde_json::json!({"message": "Method Not Allowed"}),
        ))
    };
    let page = page.unwrap_or_else(|| {
        crate::observe::Page::json(404, &serde_json::json!({"message": "Not Found"}))
    });
    let mut response = respond(page.status, Some(page.content_type), page.body, true);
    if let Some(name) = node.and_then(|node| HeaderValue::from_str(&node.name).ok()) {
        response.headers_mut().insert("x-rivulet-node", name);
    }
    response
}

/// Under `--auth sigv4`, a `/_rivulet/` page other than the health and readiness probes needs
/// HTTP Basic credentials (an access key id and its secret); without valid ones, a 401 that
/// makes a browser ask for them.
fn basic_challenge(reason: &str) -> Response<Body> {
    let body = serde_json::json!({"__type": "UnrecognizedClientException", "message": reason});
    let mut response = respond(
        401,
        Some("application/json"),
        body.to_string().into_bytes(),
        true,
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"Rivulet\", charset=\"UTF-8\""),
    );
    response
}

/// A browser opening the server is sent to the console.
fn redirect_to_console() -> Response<Body> {
    let mut response = with_request_ids(StatusCode::FOUND, Either::Left(Full::new(Bytes::new())));
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/_rivulet/"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// What every request handler shares.
#[derive(Clone)]
pub struct Ctx {
    pub engine: Arc<Engine>,
    /// Turns `true` at shutdown (subscriptions end).
    pub stopping: tokio::sync::watch::Receiver<bool>,
    pub timing: subscribe::Timing,
    /// `Some` with `--auth sigv4`: every signature is verified against these.
    pub credentials: Option<Arc<crate::sigv4::Credentials>>,
    /// Every account's engine (the server's own is `engine`).
    pub accounts: Arc<std::collections::HashMap<String, Arc<Engine>>>,
    /// Resource policies as parsed for authorization.
    pub policies: Arc<crate::authz::PolicyCache>,
    /// Metric alarms (`GET /_rivulet/alarms`).
    pub alarms: Arc<crate::alarms::Alarms>,
    /// The connection's peer (`aws:SourceIp`) and whether it came over TLS.
    pub peer: Option<std::net::IpAddr>,
    pub secure: bool,
    /// Cluster mode: this node's part (requests that change metadata go to the leader).
    pub cluster: Option<crate::cluster::Cluster>,
}

pub async fn handle(
    ctx: Ctx,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let Ctx {
        mut engine,
        stopping,
        timing,
        credentials,
        accounts,
        policies,
        peer,
        secure,
        alarms,
        cluster,
    } = ctx;
    let headers = request.headers();
    let cors = headers.contains_key(header::ORIGIN);
    if request.method() == Method::OPTIONS && cors {
        return Ok(preflight(headers));
    }
    if request.uri().path().starts_with(crate::observe::PREFIX) {
        let own = engine.config().account_id.clone();
        let stopping = *stopping.borrow();
        let probe = matches!(request.uri().path(), "/_rivulet/health" | "/_rivulet/ready");
        let caller = match &credentials {
            Some(credentials) if !probe => {
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                match credentials.basic(authorization, now_ms()) {
                    Ok(caller) => Some((credentials, caller)),
                    Err(reason) => {
                        // A browser's first visit has no credentials yet: not worth a log line.
                        if authorization.is_some() {
                            tracing::warn!(path = %request.uri().path(), %reason, "console sign-in refused");
                        }
                        return Ok(basic_challenge(&reason));
                    }
                }
            }
            _ => None,
        };
        let authorize = |operation: &str, stream_arn: &str, log_denial: bool| {
            let Some((credentials, caller)) = &caller else {
                return Ok(());
            };
            let input = if stream_arn.is_empty() {
                rivulet_protocol::Value::Map(Vec::new())
            } else {
                rivulet_protocol::Value::Map(vec![(
                    "StreamARN".to_string(),
                    rivulet_protocol::Value::Str(stream_arn.to_string()),
                )])
            };
            let call = crate::authz::Call {
                operation,
                input: &input,
                caller,
                peer,
                secure,
                now_ms: now_ms(),
                log_denial,
            };
            crate::authz::authorize(&call, credentials, &engine, &accounts, &policies)
                .map(|_| ())
                .map_err(|error| error.message.unwrap_or_default())
        };
        let viewer = caller.as_ref().map(|(_, caller)| crate::console::Viewer {
            account: &caller.account_id,
            authorize: &authorize,
        });
        let node = cluster.as_ref().map(|cluster| crate::console::Node {
            name: cluster.store.node_name().to_string(),
            leader: cluster.is_leader(),
        });
        return Ok(observability(
            &request,
            &accounts,
            &own,
            &alarms,
            stopping,
            viewer,
            node.as_ref(),
        )
        .await);
    }
    if crate::console::is_browser_root(&request) {
        return Ok(redirect_to_console());
    }
    // The envelope, in the order AWS checks it.
    if request.method() != Method::POST {
        return Ok(access_denied(cors));
    }
    let (parts, incoming) = request.into_parts();
    let headers = &parts.headers;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    let media = Media::of(content_type);
    let body = match Limited::new(incoming, BODY_BYTES_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let format = match media {
                Media::Kinesis(format) => format,
                _ => Format::of_empty_body(content_type),
            };
            let too_large = error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if too_large {
                let error = AwsError {
                    code: "SerializationException".into(),
                    message: Some(format!(
                        "Request body is larger than {BODY_BYTES_MAX} bytes."
                    )),
                    status: 413,
                    capital_message: false,
                };
                return Ok(error_response(format, &error, cors));
            }
            // The client went away mid-body; nobody reads this answer.
            return Ok(error_response(
                format,
                &AwsError::new("SerializationException", "Truncated request body."),
                cors,
            ));
        }
    };
    // An empty body is answered before anything else, without looking at auth.
    if body.is_empty() {
        let error = match operation_of(target) {
            Some(_) => AwsError::serialization(),
            None => AwsError::unknown_operation(),
        };
        return Ok(error_response(
            Format::of_empty_body(content_type),
            &error,
            cors,
        ));
    }
    let format = match media {
        Media::Kinesis(format) => format,
        // Plain JSON is parsed, then never dispatched, whatever the target or auth.
        Media::Coral => {
            return Ok(
                match rivulet_protocol::check_document(Format::Json, &body) {
                    Err(_) => coral(400, "SerializationException", cors),
                    Ok(()) => coral(404, "UnknownOperationException", cors),
                },
            );
        }
        Media::Other if has_operation_form(target) => return Ok(unknown_operation_xml(cors)),
        Media::Other => return Ok(access_denied(cors)),
    };
    let Some(operation) = operation_of(target) else {
        let error = rivulet_protocol::check_document(format, &body)
            .err()
            .unwrap_or_else(api::unknown_operation);
        return Ok(error_response(format, &error, cors));
    };
    // An unparseable body is refused before authentication; a wrong type or a constraint
    // violation only after it.
    let decoded = rivulet_protocol::decode_request(operation, format, &body);
    if let Err(error) = &decoded
        && *error == AwsError::serialization()
    {
        return Ok(error_response(format, error, cors));
    }
    if let Err(error) = check_auth(headers, parts.uri.query()) {
        return Ok(error_response(format, &error, cors));
    }
    let mut caller = None;
    if let Some(credentials) = &credentials {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        let signed = crate::sigv4::Signed {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            host,
            body: &body,
        };
        match crate::sigv4::verify(credentials, &signed, now_ms()) {
            // The caller's account decides which streams it sees.
            Ok(credential) => {
                if let Some(own) = accounts.get(&credential.account_id) {
                    engine = own.clone();
                }
                caller = Some(credential);
            }
            Err(error) => {
                tracing::warn!(code = %error.code, "request refused: signature");
                return Ok(error_response(format, &error, cors));
            }
        }
    }
    let input = match decoded {
        Ok(input) => input,
        Err(error) => return Ok(error_response(format, &error, cors)),
    };
    if let (Some(credentials), Some(caller)) = (&credentials, &caller) {
        let call = crate::authz::Call {
            operation,
            input: &input,
            caller,
            peer,
            secure,
            now_ms: now_ms(),
            log_denial: true,
        };
        match crate::authz::authorize(&call, credentials, &engine, &accounts, &policies) {
            Ok(owner) => engine = owner,
            Err(error) => return Ok(error_response(format, &error, cors)),
        }
    }
    if operation == "SubscribeToShard" {
        let mut started = subscribe::start(
            engine.clone(),
            &input,
            format,
            now_ms(),
            stopping.clone(),
            timing,
        )
        .await;
        // A node whose metadata trails (the consumer just registered or became ACTIVE
        // elsewhere) catches up and tries again.
        let trailing = |error: &AwsError| match error.code.as_str() {
            "ResourceNotFoundException" => true,
            // Not ACTIVE yet here; another subscription holding the slot is a real answer.
            "ResourceInUseException" => error
                .message
                .as_deref()
                .is_some_and(|m| m.contains("is not in ACTIVE status")),
            _ => false,
        };
        if let (Err(error), Some(cluster)) = (&started, &cluster)
            && trailing(error)
            && cluster.catch_up(&engine).await
        {
            started = subscribe::start(engine, &input, format, now_ms(), stopping, timing).await;
        }
        return Ok(match started {
            Ok(events) => respond_with(
                200,
                Some(rivulet_protocol::eventstream::CONTENT_TYPE),
                Either::Right(events),
                cors,
            ),
            Err(error) => {
                log_failure(operation, &error);
                error_response(format, &error, cors)
            }
        });
    }
    let reply = match &cluster {
        // A follower passes what changes metadata to the leader.
        Some(cluster) if cluster.forwards(operation, &engine) => {
            cluster.forward(&engine, operation, format, &body).await
        }
        Some(cluster) => {
            // Read your writes across nodes: a description or a listing on a follower first
            // takes in whatever any node committed before it (one round trip to JetStream),
            // so a client that changed a stream through one node sees the change through
            // every other at once. The data plane reads shards, not this copy.
            let caught_up = reads_metadata(operation) && cluster.catch_up(&engine).await;
            let reply = api::dispatch(&engine, operation, &input, now_ms(), format).await;
            match reply {
                // A data-plane call that found nothing catches up once and asks again.
                Err(error)
                    if error.code == "ResourceNotFoundException"
                        && !caught_up
                        && cluster.catch_up(&engine).await =>
                {
                    api::dispatch(&engine, operation, &input, now_ms(), format).await
                }
                reply => reply,
            }
        }
        None => api::dispatch(&engine, operation, &input, now_ms(), format).await,
    };
    Ok(match reply {
        Ok(body) => respond(200, Some(format.content_type()), body, cors),
        Err(error) => {
            log_failure(operation, &error);
            error_response(format, &error, cors)
        }
    })
}

/// Whether `operation` answers from the metadata alone (descriptions and listings), so a
/// follower catches up before answering it.
fn reads_metadata(operation: &str) -> bool {
    operation.starts_with("Describe")
        || operation.starts_with("List")
        || operation == "GetResourcePolicy"
}

/// Logs a server-side failure with its message, which the client does not get.
fn log_failure(operation: &str, error: &AwsError) {
    if error.status >= 500 {
        let message = error.message.as_deref().unwrap_or_default();
        tracing::error!(%operation, code = %error.code, %message, "request failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn targets() {
        assert_eq!(
            operation_of(Some("Kinesis_20131202.ListStreams")),
            Some("ListStreams")
        );
        for target in [
            None,
            Some("Kinesis_20131202.listStreams"),
            Some("Kinesis_20131202."),
            Some("Kinesis_20131201.ListStreams"),
        ] {
            assert_eq!(operation_of(target), None, "{target:?}");
        }
        for (target, form) in [
            (None, false),
            (Some("Whatever"), false),
            (Some("Kinesis_20131202."), false),
            (Some(".ListStreams"), false),
            (Some("Foo.Bar"), true),
            (Some("Kinesis_20131202.Frobnicate"), true),
        ] {
            assert_eq!(has_operation_form(target), form, "{target:?}");
        }
    }

    #[test]
    fn query_auth_counts_empty_parameters_as_missing() {
        let error = check_auth(&headers(&[]), Some("X-Amz-Algorithm")).unwrap_err();
        assert_eq!(error.code, "IncompleteSignatureException");
        assert_eq!(error.message.unwrap().matches("must include").count(), 5);
        let error = check_auth(
            &headers(&[]),
            Some(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a&X-Amz-Signature=&\
                 X-Amz-SignedHeaders=host&X-Amz-Date=20260101T000000Z",
            ),
        )
        .unwrap_err();
        assert_eq!(
            error.message.as_deref(),
            Some(
                "AWS query-string parameters must include 'X-Amz-Signature'. Re-examine the \
                 query-string parameters."
            )
        );
        let both = check_auth(
            &headers(&[("authorization", "x")]),
            Some("X-Amz-Algorithm="),
        );
        assert_eq!(both.unwrap_err().code, "InvalidSignatureException");
    }

    #[test]
    fn auth_envelope_errors() {
        let none = check_auth(&headers(&[]), None).unwrap_err();
        assert_eq!(none.code, "MissingAuthenticationTokenException");
        let partial = check_auth(
            &headers(&[("authorization", "AWS4-HMAC-SHA256 Credential=a")]),
            None,
        )
        .unwrap_err();
        assert_eq!(partial.code, "IncompleteSignatureException");
        assert!(partial.message.unwrap().starts_with(
            "Authorization header requires 'Signature' parameter. Authorization header requires \
             'SignedHeaders' parameter."
        ));
        let both = check_auth(
            &headers(&[("authorization", "x")]),
            Some("X-Amz-Algorithm=y"),
        )
        .unwrap_err();
        assert_eq!(both.code, "InvalidSignatureException");
        let good = headers(&[
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=c",
            ),
            ("x-amz-date", "20260101T000000Z"),
        ]);
        assert!(check_auth(&good, None).is_ok());
    }
}
