//! `--auth sigv4`: AWS Signature Version 4 verification, in the Authorization header or in the
//! query string (presigned), over HTTP/1.1 or HTTP/2 (the host then comes from `:authority`),
//! with signed or unsigned payloads. Credentials come from a TOML file; the signature is
//! compared in constant time (`Mac::verify_slice`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use hmac::{KeyInit, Mac};
use http::HeaderMap;
use rivulet_engine::time::{iso_basic as format_amz_date, parse_iso_basic as parse_amz_date};
use rivulet_iam::{Kind, Policy};
use rivulet_protocol::AwsError;
use serde::Deserialize;
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// How far a request's time may be from the server's.
pub const CLOCK_SKEW_MS: i64 = 15 * 60 * 1000;

/// One credential of the `--credentials` file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: String,
    pub principal_arn: String,
    /// Temporary credentials carry a session token, sent as `X-Amz-Security-Token`.
    pub session_token: Option<String>,
    /// Epoch seconds after which a temporary credential is expired.
    pub expires: Option<i64>,
}

/// An identity policy attached to a principal in the `--credentials` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyEntry {
    principal_arn: String,
    /// A name for messages; optional.
    name: Option<String>,
    /// The IAM JSON document, as JSON text or as an inline TOML table of the same shape.
    document: toml::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    credentials: Vec<Credential>,
    #[serde(default)]
    policies: Vec<PolicyEntry>,
}

/// The known credentials, by access key id, and the identity policies of each principal.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_key: HashMap<String, Credential>,
    policies: HashMap<String, Vec<Policy>>,
}

impl Credentials {
    /// Reads a TOML file of `[[credentials]]` tables.
    pub fn load(path: &Path) -> anyhow::Result<Credentials> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading credentials {}", path.display()))?;
        let file: CredentialsFile = toml::from_str(&text)
            .with_context(|| format!("parsing credentials {}", path.display()))?;
        let mut credentials = Credentials::from_list(file.credentials);
        for (i, entry) in file.policies.into_iter().enumerate() {
            let label = entry
                .name
                .clone()
                .unwrap_or_else(|| format!("policies[{i}]"));
            let parsed = match &entry.document {
                toml::Value::String(json) => Policy::parse(json, Kind::Identity),
                table => serde_json::to_value(table)
                    .map_err(|e| rivulet_iam::PolicyError(e.to_string()))
                    .and_then(|value| Policy::from_value(&value, Kind::Identity)),
            }
            .with_context(|| format!("policy {label} in {}", path.display()))?;
            credentials.attach(&entry.principal_arn, parsed);
        }
        Ok(credentials)
    }

    /// Attaches an identity policy to a principal.
    pub fn attach(&mut self, principal_arn: &str, policy: Policy) {
        self.policies
            .entry(principal_arn.to_string())
            .or_default()
            .push(policy);
    }

    /// The identity policies attached to a principal (none: every request is denied unless a
    /// resource policy allows it, or the principal is an account's root).
    pub fn policies_of(&self, principal_arn: &str) -> &[Policy] {
        self.policies
            .get(principal_arn)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// A credential of `account`, preferring its root principal (for the server's own calls,
    /// such as `serve --streams`).
    pub fn of_account(&self, account: &str) -> Option<&Credential> {
        let mut of: Vec<&Credential> = self
            .by_key
            .values()
            .filter(|c| c.account_id == account)
            .collect();
        of.sort_by_key(|c| {
            (
                !rivulet_iam::is_root(&c.principal_arn),
                c.access_key_id.clone(),
            )
        });
        of.first().copied()
    }

    /// Every account the credentials belong to.
    pub fn accounts(&self) -> std::collections::BTreeSet<String> {
        self.by_key.values().map(|c| c.account_id.clone()).collect()
    }

    /// HTTP Basic authentication, for the `/_rivulet/` pages a browser or a metrics scraper
    /// reads (they cannot sign): the user name is an access key id and the password its secret
    /// access key. The secret is compared in constant time; temporary credentials are refused
    /// (their session token cannot come along). The error is the reason, for the 401's body.
    pub fn basic(&self, authorization: Option<&str>, now_ms: i64) -> Result<Credential, String> {
        use base64::Engine as _;
        let malformed = || "The Authorization header is not valid Basic credentials.".to_string();
        let (scheme, encoded) = authorization.and_then(|v| v.split_once(' ')).ok_or(
            "Sign in with an access key id as the user name and its secret access key as the \
             password.",
        )?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(malformed());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(malformed)?;
        let (key_id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
        let refused = || "The access key id or the secret access key is not valid.".to_string();
        let credential = self.by_key.get(key_id);
        // Constant time: a MAC keyed with the given secret, verified with the stored one (with
        // a stand-in for an unknown key id, so timing does not tell which ids exist).
        let stored = credential.map_or(&b"rivulet-unknown-key"[..], |c| {
            c.secret_access_key.as_bytes()
        });
        let tag = hmac(secret.as_bytes(), b"rivulet-console").map_err(|_| refused())?;
        let matches = HmacSha256::new_from_slice(stored)
            .map_err(|_| refused())?
            .chain_update(b"rivulet-console")
            .verify_slice(&tag)
            .is_ok();
        let credential = credential.filter(|_| matches).ok_or_else(refused)?;
        // A temporary credential is valid only with its session token, which Basic cannot
        // carry.
        if credential.session_token.is_some() {
            return Err(
                "Temporary credentials need their session token: sign in with a long-term \
                 access key."
                    .to_string(),
            );
        }
        if credential
            .expires
            .is_some_and(|e| now_ms >= e.saturating_mul(1000))
        {
            return Err("The security token included in the request is expired".to_string());
        }
        Ok(credential.clone())
    }

    pub fn from_list(list: Vec<Credential>) -> Credentials {
        Credentials {
            by_key: list
                .into_iter()
                .map(|c| (c.access_key_id.clone(), c))
                .collect(),
            policies: HashMap::new(),
        }
    }
}

/// What a request needs for verification.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// `Host`, or HTTP/2's `:authority`.
    pub host: Option<&'a str>,
    pub body: &'a [u8],
}

fn error(code: &str, message: impl Into<String>) -> AwsError {
    AwsError::new(code, message)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A MAC keyed with `key`. HMAC takes keys of any length, so this never fails; a failure
/// would only refuse the request.
fn mac(key: &[u8]) -> Result<HmacSha256, AwsError> {
    <HmacSha256 as KeyInit>::new_from_slice(key)
        .map_err(|_| AwsError::internal("HMAC key rejected"))
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>, AwsError> {
    let mut mac = mac(key)?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// RFC 3986 unreserved characters stay; everything else is %XX (uppercase), as SigV4 wants.
fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` escapes decoded (invalid ones kept as written); bytes that are not UTF-8 are replaced.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's parameters, decoded, in order.
pub(crate) fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The parts of a signature, from the header or the query.
struct Parts {
    access_key: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    presigned: bool,
    expires_s: Option<i64>,
}

fn parse_credential(credential: &str) -> Result<(String, String, String, String), AwsError> {
    let fields: Vec<&str> = credential.split('/').collect();
    match fields.as_slice() {
        [key, date, region, service, "aws4_request"] => Ok((
            key.to_string(),
            date.to_string(),
            region.to_string(),
            service.to_string(),
        )),
        _ => Err(error(
            "IncompleteSignatureException",
            format!("Credential should be scoped to a valid region. Credential={credential}"),
        )),
    }
}

fn parts(request: &Signed<'_>) -> Result<Parts, AwsError> {
    if let Some(auth) = request
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
            error(
                "IncompleteSignatureException",
                format!("Unsupported Authorization Type. Authorization={auth}"),
            )
        })?;
        let mut fields = HashMap::new();
        for item in rest.split(',') {
            if let Some((k, v)) = item.trim().split_once('=') {
                fields.insert(k.trim(), v.trim());
            }
        }
        let credential = fields.get("Credential").copied().unwrap_or_default();
        let (access_key, date, region, service) = parse_credential(credential)?;
        let amz_date = request
            .headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        return Ok(Parts {
            access_key,
            date,
            region,
            service,
            signed_headers: fields
                .get("SignedHeaders")
                .copied()
                .unwrap_or_default()
                .split(';')
                .map(str::to_string)
                .collect(),
            signature: fields
                .get("Signature")
                .copied()
                .unwrap_or_default()
                .to_string(),
            amz_date,
            presigned: false,
            expires_s: None,
        });
    }
    let params: HashMap<String, String> = query_params(request.query).into_iter().collect();
    let get = |name: &str| params.get(name).cloned().unwrap_or_default();
    let (access_key, date, region, service) = parse_credential(&get("X-Amz-Credential"))?;
    Ok(Parts {
        access_key,
        date,
        region,
        service,
        signed_headers: get("X-Amz-SignedHeaders")
            .split(';')
            .map(str::to_string)
            .collect(),
        signature: get("X-Amz-Signature"),
        amz_date: get("X-Amz-Date"),
        presigned: true,
        expires_s: params.get("X-Amz-Expires").and_then(|v| v.parse().ok()),
    })
}

/// Verifies a request's signature; the credential it was made with on success.
pub fn verify(
    credentials: &Credentials,
    request: &Signed<'_>,
    now_ms: i64,
) -> Result<Credential, AwsError> {
    let parts = parts(request)?;
    let credential = credentials.by_key.get(&parts.access_key).ok_or_else(|| {
        error(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    })?;
    let signed_at = parse_amz_date(&parts.amz_date).ok_or_else(|| {
        error(
            "IncompleteSignatureException",
            format!(
                "Date must be in ISO-8601 'basic format'. Got '{}'.",
                parts.amz_date
            ),
        )
    })?;
    if parts.presigned {
        let expires_ms = parts.expires_s.unwrap_or(0).saturating_mul(1000);
        if now_ms > signed_at.saturating_add(expires_ms) {
            return Err(error(
                "InvalidSignatureException",
                format!(
                    "Signature expired: {} is now earlier than {} ({} - {} sec.)",
                    format_amz_date(signed_at.saturating_add(expires_ms)),
                    format_amz_date(now_ms),
                    format_amz_date(now_ms),
                    parts.expires_s.unwrap_or(0)
                ),
            ));
        }
    } else if (now_ms - signed_at).abs() > CLOCK_SKEW_MS {
        let (earlier, later) = if signed_at < now_ms {
            ("earlier", now_ms - CLOCK_SKEW_MS)
        } else {
            ("later", now_ms + CLOCK_SKEW_MS)
        };
        return Err(error(
            "InvalidSignatureException",
            format!(
                "Signature expired: {} is now {earlier} than {} ({} {} 15 min.)",
                parts.amz_date,
                format_amz_date(later),
                format_amz_date(now_ms),
                if earlier == "earlier" { "-" } else { "+" }
            ),
        ));
    }
    if let Some(token) = &credential.session_token {
        let sent = request
            .headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                query_params(request.query)
                    .into_iter()
                    .find(|(k, _)| k == "X-Amz-Security-Token")
                    .map(|(_, v)| v)
            });
        if sent.as_deref() != Some(token.as_str()) {
            return Err(error(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        }
        if credential.expires.is_some_and(|e| now_ms >= e * 1000) {
            return Err(error(
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ));
        }
    }
    // The canonical request.
    let mut query: Vec<(String, String)> = query_params(request.query)
        .into_iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in &parts.signed_headers {
        // The JS SDK v3 signs HTTP/2's `:authority` pseudo-header by that name.
        let value = if name == "host" || name == ":authority" {
            request.host.map(str::to_string)
        } else {
            let values: Vec<String> = request
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        };
        canonical_headers.push_str(&format!("{name}:{}\n", value.unwrap_or_default()));
    }
    let payload_hash = match request
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some(declared) if declared == "UNSIGNED-PAYLOAD" => declared.to_string(),
        Some(declared) => {
            let actual = hex(&Sha256::digest(request.body));
            if declared != actual {
                return Err(error(
                    "InvalidSignatureException",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
            actual
        }
        None if parts.presigned => "UNSIGNED-PAYLOAD".to_string(),
        None => hex(&Sha256::digest(request.body)),
    };
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        path,
        canonical_query,
        canonical_headers,
        parts.signed_headers.join(";"),
        payload_hash
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        parts.date, parts.region, parts.service
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        parts.amz_date,
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", credential.secret_access_key).as_bytes(),
        parts.date.as_bytes(),
    )?;
    for part in [
        parts.region.as_str(),
        parts.service.as_str(),
        "aws4_request",
    ] {
        key = hmac(&key, part.as_bytes())?;
    }
    let mut mac = mac(&key)?;
    mac.update(string_to_sign.as_bytes());
    let given = unhex(&parts.signature).unwrap_or_default();
    mac.verify_slice(&given).map_err(|_| {
        tracing::debug!(canonical_request = %canonical, "signature mismatch");
        error(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        )
    })?;
    Ok(credential.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `get-vanilla` case of AWS's SigV4 test suite (as shipped with aws-sigv4).
    #[test]
    fn aws_test_vector_get_vanilla() {
        let credentials = Credentials::from_list(vec![Credential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            account_id: "000000000000".into(),
            principal_arn: "arn:aws:iam::000000000000:user/example".into(),
            session_token: None,
            expires: None,
        }]);
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                .parse()
                .unwrap(),
        );
        let request = Signed {
            method: "GET",
            path: "/",
            query: None,
            headers: &headers,
            host: Some("example.amazonaws.com"),
            body: b"",
        };
        let now = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            verify(&credentials, &request, now).map(|c| c.account_id),
            Ok("000000000000".into())
        );
        // Wrong secret, skewed clock, unknown key.
        let mut bad = headers.clone();
        bad.insert(
            http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=0000000000000000000000000000000000000000000000000000000000000000"
                .parse()
                .unwrap(),
        );
        let wrong = Signed {
            headers: &bad,
            ..request
        };
        assert_eq!(
            verify(&credentials, &wrong, now).unwrap_err().code,
            "InvalidSignatureException"
        );
        let late = verify(&credentials, &request, now + 16 * 60 * 1000).unwrap_err();
        assert_eq!(
            late.message.as_deref(),
            Some(
                "Signature expired: 20150830T123600Z is now earlier than 20150830T123700Z \
                 (20150830T125200Z - 15 min.)"
            )
        );
        let nobody = Credentials::default();
        assert_eq!(
            verify(&nobody, &request, now).unwrap_err().code,
            "UnrecognizedClientException"
        );
    }

    /// The presigned-URL example of AWS's SigV4 documentation ("Authenticating Requests:
    /// Using Query Parameters").
    #[test]
    fn aws_presigned_url_example() {
        let credentials = Credentials::from_list(vec![Credential {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            account_id: "000000000000".into(),
            principal_arn: "arn:aws:iam::000000000000:user/example".into(),
            session_token: None,
            expires: None,
        }]);
        let headers = HeaderMap::new();
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
            &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
            &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let request = Signed {
            method: "GET",
            path: "/test.txt",
            query: Some(query),
            headers: &headers,
            host: Some("examplebucket.s3.amazonaws.com"),
            body: b"",
        };
        let signed_at = parse_amz_date("20130524T000000Z").unwrap();
        assert!(verify(&credentials, &request, signed_at + 1_000).is_ok());
        // After X-Amz-Expires, the URL is refused.
        let expired = verify(&credentials, &request, signed_at + 86_401_000).unwrap_err();
        assert_eq!(expired.code, "InvalidSignatureException");
        assert!(
            expired
                .message
                .unwrap_or_default()
                .starts_with("Signature expired:")
        );
    }
}
