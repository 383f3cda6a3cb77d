//! The metadata store: a redb database reached through the store's [`Backend`], so the crash
//! model covers it like the logs.

use std::fmt;
use std::io;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::LogError;
use crate::backend::{Backend, BackendFile};

/// File name of the metadata database in the store root.
pub(crate) const META_FILE: &str = "meta.redb";
/// Where a new metadata database is built before it is renamed to `META_FILE`.
const META_FILE_NEW: &str = "meta.redb.new";
/// redb's page cache: metadata is small, and memory is bounded by configuration, not data.
const META_CACHE_BYTES: usize = 8 << 20;
const META_TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("meta");

/// One operation of a metadata transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaOp {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes `key` (no error if absent).
    Delete {
        /// The key.
        key: String,
    },
}

/// Atomic, durable key-value metadata (stream definitions, consumers, and so on).
pub struct MetaStore {
    db: Database,
}

impl fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaStore").finish_non_exhaustive()
    }
}

/// Adapts a backend file to redb's storage trait.
struct RedbStorage {
    file: Arc<dyn BackendFile>,
}

impl fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStorage")
            .field("file", &self.file)
            .finish()
    }
}

impl redb::StorageBackend for RedbStorage {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write_all_at(data, offset)
    }
}

impl MetaStore {
    /// Opens (creating if needed) `meta.redb` in the backend's root; redb recovers it if needed.
    pub(crate) fn open(backend: &dyn Backend) -> Result<Self, LogError> {
        let builder = || {
            let mut builder = Database::builder();
            builder.set_cache_size(META_CACHE_BYTES);
            builder
        };
        let db = match backend.open_file(META_FILE, false) {
            Ok(file) => {
                let db = builder()
                    .create_with_backend(RedbStorage { file })
                    .map_err(LogError::meta)?;
                // Already there, unless an earlier release crashed before its first commit.
                Self::create_table(&db)?;
                db
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                // redb initializes a database in two syncs and writes its magic number only in
                // the second: a crash between them leaves a file it refuses to open ("not a
                // redb database"). So a new database is built under another name and renamed
                // into place once complete; a crash before that leaves only that name, whose
                // file holds no commit and is started over here.
                match backend.remove_file(META_FILE_NEW) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error.into()),
                }
                let file = backend.open_file(META_FILE_NEW, true)?;
                let db = builder()
                    .create_with_backend(RedbStorage { file })
                    .map_err(LogError::meta)?;
                Self::create_table(&db)?;
                backend.rename(META_FILE_NEW, META_FILE)?;
                // The file's directory entry must be durable before any commit counts as durable.
                backend.sync_dir("")?;
                db
            }
            Err(error) => return Err(error.into()),
        };
        Ok(Self { db })
    }

    /// Creates the table if it does not exist yet (a durable commit).
    fn create_table(db: &Database) -> Result<(), LogError> {
        let txn = db.begin_write().map_err(LogError::meta)?;
        txn.open_table(META_TABLE).map_err(LogError::meta)?;
        txn.commit().map_err(LogError::meta)
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        let txn = self.db.begin_read().map_err(LogError::meta)?;
        let table = txn.open_table(META_TABLE).map_err(LogError::meta)?;
        let value = table.get(key).map_err(LogError::meta)?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    /// Every key starting with `prefix`, in key order, with its value.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let txn = self.db.begin_read().map_err(LogError::meta)?;
        let table = txn.open_table(META_TABLE).map_err(LogError::meta)?;
        let mut found = Vec::new();
        for entry in table.range(prefix..).map_err(LogError::meta)? {
            let (key, value) = entry.map_err(LogError::meta)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            found.push((key.value().to_string(), value.value().to_vec()));
        }
        Ok(found)
    }

    /// Applies all `ops`, in order, in one durable transaction: after a crash, all or none.
    pub fn commit(&self, ops: &[MetaOp]) -> Result<(), LogError> {
        let mut txn = self.db.begin_write().map_err(LogError::meta)?;
        txn.set_durability(Durability::Immediate)
            .map_err(LogError::meta)?;
        {
            let mut table = txn.open_table(META_TABLE).map_err(LogError::meta)?;
            for op in ops {
                match op {
                    MetaOp::Put { key, value } => {
                        table
                            .insert(key.as_str(), value.as_slice())
                            .map_err(LogError::meta)?;
                    }
                    MetaOp::Delete { key } => {
                        table.remove(key.as_str()).map_err(LogError::meta)?;
                    }
                }
            }
        }
        txn.commit().map_err(LogError::meta)
    }
}
