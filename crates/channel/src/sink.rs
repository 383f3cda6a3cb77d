//! Where objects go:
//! - `LocalBuckets`, the embedded default: a folder per bucket under the bucket dir, each
//!   object written to a temporary file, synced, renamed into place and its folder synced, so
//!   an object is either whole or absent, and durable once `put` returns;
//! - `S3Buckets`: an S3 endpoint (SeaweedFS, MinIO or AWS) through OpenDAL, credentials from
//!   AWS's standard sources; a PUT is durable once S3 answers it.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

/// What an `ObjectStore` call returns.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// How an object is written.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// SSE-KMS with this key (S3 only).
    pub kms_key: Option<String>,
    /// The storage class, when not STANDARD (S3 only).
    pub storage_class: Option<String>,
}

/// An object store with buckets, as a channel uses it.
pub trait ObjectStore: Send + Sync {
    /// Checks that `bucket` exists and that `owner` (ExpectedBucketOwner) owns it; the error
    /// is the reason a channel FAILED.
    fn check_bucket<'a>(&'a self, bucket: &'a str, owner: &'a str) -> StoreFuture<'a>;
    /// Stores `body` under `key`, replacing what is there; durable when it returns.
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Vec<u8>,
        options: &'a PutOptions,
    ) -> StoreFuture<'a>;
    /// Whether objects can be encrypted with a KMS key (SSE-KMS).
    fn encrypts(&self) -> bool {
        false
    }
}

/// No object store: every channel FAILS, saying how to configure one.
pub struct NoBuckets;

impl ObjectStore for NoBuckets {
    fn check_bucket<'a>(&'a self, bucket: &'a str, _owner: &'a str) -> StoreFuture<'a> {
        Box::pin(async move {
            Err(format!(
                "No object store is configured, so bucket {bucket} cannot be reached: start \
                 the server with --bucket-dir DIR (a folder per bucket) or --s3-endpoint URL."
            ))
        })
    }
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        _body: Vec<u8>,
        _options: &'a PutOptions,
    ) -> StoreFuture<'a> {
        Box::pin(async move { Err(format!("No object store is configured for {bucket}/{key}.")) })
    }
}

/// Buckets as folders under one directory, owned by one account.
#[derive(Clone)]
pub struct LocalBuckets {
    root: PathBuf,
    owner: String,
}

impl LocalBuckets {
    /// Buckets under `root`, owned by account `owner`.
    pub fn new(root: impl Into<PathBuf>, owner: impl Into<String>) -> LocalBuckets {
        LocalBuckets {
            root: root.into(),
            owner: owner.into(),
        }
    }

    fn bucket_dir(&self, bucket: &str) -> Result<PathBuf, String> {
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && !bucket.contains("..");
        if !valid {
            return Err(format!("The bucket name {bucket} is not valid."));
        }
        Ok(self.root.join(bucket))
    }
}

impl ObjectStore for LocalBuckets {
    fn check_bucket<'a>(&'a self, bucket: &'a str, owner: &'a str) -> StoreFuture<'a> {
        let this = self.clone();
        let (bucket, owner) = (bucket.to_string(), owner.to_string());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.check_bucket_now(&bucket, &owner))
                .await
                .map_err(|e| format!("the bucket check stopped: {e}"))?
        })
    }

    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Vec<u8>,
        _options: &'a PutOptions,
    ) -> StoreFuture<'a> {
        let this = self.clone();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.put_now(&bucket, &key, &body))
                .await
                .map_err(|e| format!("the object write stopped: {e}"))?
        })
    }
}

impl LocalBuckets {
    fn check_bucket_now(&self, bucket: &str, owner: &str) -> Result<(), String> {
        let dir = self.bucket_dir(bucket)?;
        if !dir.is_dir() {
            return Err(format!(
                "The specified bucket does not exist: {bucket} (no folder {}).",
                dir.display()
            ));
        }
        if owner != self.owner {
            return Err(format!(
                "Access Denied: bucket {bucket} is not owned by account {owner}."
            ));
        }
        Ok(())
    }

    fn put_now(&self, bucket: &str, key: &str, body: &[u8]) -> Result<(), String> {
        let dir = self.bucket_dir(bucket)?;
        if !dir.is_dir() {
            return Err(format!("The specified bucket does not exist: {bucket}."));
        }
        if key
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(format!(
                "The object key {key} cannot be stored in a folder."
            ));
        }
        let path = dir.join(key);
        let parent = path
            .parent()
            .ok_or_else(|| format!("The object key {key} has no folder."))?;
        let failed = |what: &str, error: std::io::Error| {
            format!("Writing {} failed ({what}): {error}", path.display())
        };
        std::fs::create_dir_all(parent).map_err(|e| failed("making its folder", e))?;
        let mut temp = tempfile_in(parent).map_err(|e| failed("creating a temporary file", e))?;
        temp.1.write_all(body).map_err(|e| failed("writing", e))?;
        temp.1.sync_all().map_err(|e| failed("syncing", e))?;
        std::fs::rename(&temp.0, &path).map_err(|e| failed("renaming", e))?;
        sync_dir(parent).map_err(|e| failed("syncing its folder", e))?;
        Ok(())
    }
}

/// A new temporary file in `dir` (a dot name, so listings of finished objects skip it).
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = dir.join(format!(".rivulet-{}-{nanos}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Buckets of an S3 endpoint.
pub struct S3Buckets {
    endpoint: String,
    region: String,
    operators: parking_lot::Mutex<HashMap<(String, String), opendal::Operator>>,
}

impl S3Buckets {
    /// Buckets of the S3 API at `endpoint` (path-style addressing, as SeaweedFS and MinIO
    /// need and AWS accepts) in `region`; credentials from AWS's standard sources
    /// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance metadata).
    pub fn new(endpoint: impl Into<String>, region: impl Into<String>) -> S3Buckets {
        S3Buckets {
            endpoint: endpoint.into(),
            region: region.into(),
            operators: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The operator of `bucket` with `options` (one per bucket and encryption key).
    fn operator(&self, bucket: &str, options: &PutOptions) -> Result<opendal::Operator, String> {
        let id = (
            bucket.to_string(),
            format!(
                "{}|{}",
                options.kms_key.as_deref().unwrap_or_default(),
                options.storage_class.as_deref().unwrap_or_default()
            ),
        );
        let mut operators = self.operators.lock();
        if let Some(operator) = operators.get(&id) {
            return Ok(operator.clone());
        }
        let mut builder = opendal::services::S3::default()
            .bucket(bucket)
            .endpoint(&self.endpoint)
            .region(&self.region)
            .root("/");
        if let Some(key) = &options.kms_key {
            builder = builder.server_side_encryption_with_customer_managed_kms_key(key);
        }
        if let Some(class) = &options.storage_class {
            builder = builder.default_storage_class(class);
        }
        let operator = opendal::Operator::new(builder)
            .map_err(|e| format!("S3 set-up for bucket {bucket}: {e}"))?
            .layer(opendal::layers::RetryLayer::new().with_max_times(3))
            .finish();
        operators.insert(id, operator.clone());
        Ok(operator)
    }
}

impl ObjectStore for S3Buckets {
    fn check_bucket<'a>(&'a self, bucket: &'a str, _owner: &'a str) -> StoreFuture<'a> {
        Box::pin(async move {
            let operator = self.operator(bucket, &PutOptions::default())?;
            operator.check().await.map_err(|error| {
                if error.kind() == opendal::ErrorKind::NotFound
                    || error.to_string().contains("NoSuchBucket")
                {
                    format!("The specified bucket does not exist: {bucket}.")
                } else {
                    format!("Bucket {bucket} cannot be reached: {error}")
                }
            })
        })
    }

    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Vec<u8>,
        options: &'a PutOptions,
    ) -> StoreFuture<'a> {
        Box::pin(async move {
            let operator = self.operator(bucket, options)?;
            operator
                .write(key, body)
                .await
                .map(|_| ())
                .map_err(|error| format!("Writing s3://{bucket}/{key} failed: {error}"))
        })
    }

    fn encrypts(&self) -> bool {
        true
    }
}

/// A shared object store.
pub type SharedStore = Arc<dyn ObjectStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_land_whole_in_bucket_folders() {
        let root = tempfile::tempdir().unwrap();
        let buckets = LocalBuckets::new(root.path(), "123456789012");
        let options = PutOptions::default();
        assert!(
            buckets
                .check_bucket("missing", "123456789012")
                .await
                .unwrap_err()
                .contains("does not exist")
        );
        std::fs::create_dir(root.path().join("lake")).unwrap();
        buckets.check_bucket("lake", "123456789012").await.unwrap();
        assert!(buckets.check_bucket("lake", "000000000000").await.is_err());
        buckets
            .put("lake", "a/b/c.json", b"x\n".to_vec(), &options)
            .await
            .unwrap();
        buckets
            .put("lake", "a/b/c.json", b"y\n".to_vec(), &options)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(root.path().join("lake/a/b/c.json")).unwrap(),
            b"y\n"
        );
        assert!(
            buckets
                .put("lake", "../escape", Vec::new(), &options)
                .await
                .is_err()
        );
        assert!(
            buckets
                .put("Bad_Bucket", "k", Vec::new(), &options)
                .await
                .is_err()
        );
        let names: Vec<_> = std::fs::read_dir(root.path().join("lake/a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.json"]);
    }
}
