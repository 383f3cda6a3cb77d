//! Where objects go. `LocalBuckets`, the embedded default: a folder per bucket under the
//! bucket dir, each object written to a temporary file, synced, renamed into place and its
//! folder synced, so an object is either whole or absent, and durable once `put` returns.

use std::io::Write;
use std::path::{Path, PathBuf};

/// An object store with buckets, as a channel uses it.
pub trait ObjectStore: Send + Sync {
    /// Checks that `bucket` exists and that `owner` (ExpectedBucketOwner) owns it; the error
    /// is the reason a channel FAILED.
    fn check_bucket(&self, bucket: &str, owner: &str) -> Result<(), String>;
    /// Stores `body` under `key`, replacing what is there; durable when it returns.
    fn put(&self, bucket: &str, key: &str, body: &[u8]) -> Result<(), String>;
}

/// No object store: every channel FAILS, saying how to configure one.
pub struct NoBuckets;

impl ObjectStore for NoBuckets {
    fn check_bucket(&self, bucket: &str, _owner: &str) -> Result<(), String> {
        Err(format!(
            "No object store is configured, so bucket {bucket} cannot be reached: start the \
             server with --bucket-dir DIR (a folder per bucket)."
        ))
    }
    fn put(&self, bucket: &str, key: &str, _body: &[u8]) -> Result<(), String> {
        Err(format!("No object store is configured for {bucket}/{key}."))
    }
}

/// Buckets as folders under one directory, owned by one account.
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
    fn check_bucket(&self, bucket: &str, owner: &str) -> Result<(), String> {
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

    fn put(&self, bucket: &str, key: &str, body: &[u8]) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_land_whole_in_bucket_folders() {
        let root = tempfile::tempdir().unwrap();
        let buckets = LocalBuckets::new(root.path(), "123456789012");
        assert!(
            buckets
                .check_bucket("missing", "123456789012")
                .unwrap_err()
                .contains("does not exist")
        );
        std::fs::create_dir(root.path().join("lake")).unwrap();
        buckets.check_bucket("lake", "123456789012").unwrap();
        assert!(buckets.check_bucket("lake", "000000000000").is_err());
        buckets.put("lake", "a/b/c.json", b"x\n").unwrap();
        buckets.put("lake", "a/b/c.json", b"y\n").unwrap();
        assert_eq!(
            std::fs::read(root.path().join("lake/a/b/c.json")).unwrap(),
            b"y\n"
        );
        assert!(buckets.put("lake", "../escape", b"").is_err());
        assert!(buckets.put("Bad_Bucket", "k", b"").is_err());
        let names: Vec<_> = std::fs::read_dir(root.path().join("lake/a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.json"]);
    }
}
