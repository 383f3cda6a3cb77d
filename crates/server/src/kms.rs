//! The built-in key service: KMS keys and aliases in a key file (`--kms-keys`), kept apart from
//! the data directory so no master key lies in plaintext beside the data. Each account has
//! `alias/aws/kinesis` (an AWS-managed key, made on first use); other keys are made, enabled,
//! disabled, rotated and scheduled for deletion with `rivulet kms …`, and a running server
//! picks the file's changes up within a tick.
//!
//! Data keys are wrapped with AES-256-GCM under the key's newest material (rotation adds
//! material; older versions stay to unwrap what they wrapped): `1 · version u32 · nonce 12 ·
//! ciphertext 32 · tag 16`, with the key's ARN as additional authenticated data.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use parking_lot::{Mutex, RwLock};
use rivulet_engine::encryption::KeyService;
use rivulet_engine::{ApiError, ErrorKind};
use serde::{Deserialize, Serialize};

/// The alias of the AWS-managed key for Kinesis, which every account has.
pub const AWS_MANAGED_ALIAS: &str = "alias/aws/kinesis";
const WRAP_FORMAT: u8 = 1;
const MANAGED_DESCRIPTION: &str =
    "Default key that protects my Kinesis data when no other key is defined";

/// A key's state, as KMS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

/// One KMS key of the key file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub id: String,
    pub account_id: String,
    pub region: String,
    #[serde(default)]
    pub description: String,
    pub state: KeyState,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `true` for `alias/aws/kinesis`'s key.
    #[serde(default)]
    pub aws_managed: bool,
    /// Key material, base64 of 32 bytes, oldest first; the last one wraps new data keys.
    pub material: Vec<String>,
}

impl KeyEntry {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{}",
            self.region, self.account_id, self.id
        )
    }
}

/// The key file's contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Cluster mode: the secret each node derives every account's `alias/aws/kinesis` key
    /// from, so that all nodes sharing the file have the same one (base64 of 32 bytes;
    /// `rivulet kms init` writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_root: Option<String>,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

fn random_material() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(STANDARD.encode(bytes))
}

impl KeyFile {
    /// Reads a key file; a missing file is an empty one.
    pub fn load(path: &Path) -> anyhow::Result<KeyFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("parsing key file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
        }
    }

    /// Writes the file atomically (a temporary file renamed over it), readable by its owner
    /// only.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string(self).context("encoding key file")?;
        let temporary = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&temporary)
                .with_context(|| format!("writing {}", temporary.display()))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, path)
            .with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// Adds a customer-managed key and returns it.
    pub fn create_key(
        &mut self,
        account_id: &str,
        region: &str,
        description: &str,
        alias: Option<&str>,
    ) -> anyhow::Result<KeyEntry> {
        if let Some(alias) = alias {
            check_alias_name(alias)?;
            if self.find_alias(account_id, alias).is_some() {
                anyhow::bail!("alias {alias} already exists");
            }
        }
        let entry = KeyEntry {
            id: uuid::Uuid::new_v4().to_string(),
            account_id: account_id.into(),
            region: region.into(),
            description: description.into(),
            state: KeyState::Enabled,
            aliases: alias.map(str::to_string).into_iter().collect(),
            aws_managed: false,
            material: vec![random_material()?],
        };
        self.keys.push(entry.clone());
        Ok(entry)
    }

    /// Gives the file the root cluster nodes derive AWS-managed keys from, unless it has one;
    /// says whether it added it.
    pub fn ensure_managed_root(&mut self) -> anyhow::Result<bool> {
        if self.managed_root.is_some() {
            return Ok(false);
        }
        self.managed_root = Some(random_material()?);
        Ok(true)
    }

    /// Adds `other`'s customer-managed keys that this file lacks (`rivulet migrate`: a single
    /// node's keys into a deployment's shared file); says how many. A key id both files hold
    /// with different material is refused.
    pub fn add_customer_keys(&mut self, other: &KeyFile) -> anyhow::Result<usize> {
        let mut added = 0;
        for key in other.keys.iter().filter(|key| !key.aws_managed) {
            match self
                .keys
                .iter()
                .find(|have| have.id == key.id && have.account_id == key.account_id)
            {
                Some(have) if have.material == key.material => {}
                Some(have) => anyhow::bail!(
                    "{} is in both key files with different key material",
                    have.arn()
                ),
                None => {
                    for alias in &key.aliases {
                        if self.find_alias(&key.account_id, alias).is_some() {
                            anyhow::bail!(
                                "alias {alias} of account {} names another key in the \
                                 destination key file",
                                key.account_id
                            );
                        }
                    }
                    self.keys.push(key.clone());
                    added += 1;
                }
            }
        }
        Ok(added)
    }

    fn find_alias(&self, account_id: &str, alias: &str) -> Option<usize> {
        self.keys
            .iter()
            .position(|k| k.account_id == account_id && k.aliases.iter().any(|a| a == alias))
    }

    /// The key a CLI argument names: key id, key ARN, alias name or alias ARN (any account).
    pub fn find(&mut self, key: &str) -> anyhow::Result<&mut KeyEntry> {
        let at = self.keys.iter().position(|k| {
            k.id == key
                || k.arn() == key
                || k.aliases.iter().any(|a| {
                    a == key || format!("arn:aws:kms:{}:{}:{a}", k.region, k.account_id) == key
                })
        });
        match at {
            Some(at) => Ok(&mut self.keys[at]),
            None => anyhow::bail!("no key {key} in the key file"),
        }
    }
}

fn check_alias_name(alias: &str) -> anyhow::Result<()> {
    let name = alias
        .strip_prefix("alias/")
        .context("an alias name starts with alias/")?;
    if name.is_empty() || name.starts_with("aws/") {
        anyhow::bail!("alias/aws/ names are reserved for AWS-managed keys");
    }
    Ok(())
}

fn kms_error(kind: ErrorKind, message: impl Into<String>) -> ApiError {
    ApiError::new(kind, message)
}

fn cipher(material: &str) -> Option<LessSafeKey> {
    let bytes = STANDARD.decode(material).ok()?;
    UnboundKey::new(&AES_256_GCM, &bytes)
        .ok()
        .map(LessSafeKey::new)
}

/// The key service of a running server.
pub struct LocalKms {
    /// `None`: keys live in memory only (`--in-memory`, tests).
    path: Option<PathBuf>,
    /// Cluster mode: every node reads the same key file and none writes it; the AWS-managed
    /// keys are derived from its `managed_root` instead of made and stored.
    shared: bool,
    region: String,
    keys: RwLock<KeyFile>,
    /// The file's modification time when last read or written.
    seen: Mutex<Option<SystemTime>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl LocalKms {
    /// A key service over the key file at `path` (created when a key is first made), or in
    /// memory.
    pub fn open(path: Option<PathBuf>, region: &str) -> anyhow::Result<LocalKms> {
        let keys = match &path {
            Some(path) => KeyFile::load(path)?,
            None => KeyFile::default(),
        };
        let seen = path.as_deref().and_then(modified);
        Ok(LocalKms {
            path,
            shared: false,
            region: region.to_string(),
            keys: RwLock::new(keys),
            seen: Mutex::new(seen),
        })
    }

    /// The key service of a cluster node: the key file is shared by every node, read, never
    /// written (see [`LocalKms::shared`]).
    pub fn open_shared(path: PathBuf, region: &str) -> anyhow::Result<LocalKms> {
        let kms = LocalKms::open(Some(path), region)?;
        Ok(LocalKms {
            shared: true,
            ..kms
        })
    }

    /// Re-reads the key file if it changed (a `rivulet kms` command, an edit).
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.path else { return };
        let now = modified(path);
        let mut seen = self.seen.lock();
        if now == *seen {
            return;
        }
        match KeyFile::load(path) {
            Ok(keys) => {
                *self.keys.write() = keys;
                *seen = now;
                tracing::info!(path = %path.display(), "key file reloaded");
            }
            Err(error) => tracing::error!(%error, "key file not reloaded"),
        }
    }

    fn persist(&self, keys: &KeyFile) -> Result<(), ApiError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        keys.save(path).map_err(|e| {
            tracing::error!(error = %e, "key file not written");
            ApiError::new(
                ErrorKind::KmsInvalidState,
                "The key service cannot store keys.",
            )
        })?;
        *self.seen.lock() = modified(path);
        Ok(())
    }

    /// The index of the key `key_id` names for `account`, creating `alias/aws/kinesis`'s key on
    /// first use.
    fn lookup(&self, account: &str, key_id: &str) -> Result<KeyEntry, ApiError> {
        let region = &self.region;
        let not_found_key = |id: &str| {
            kms_error(
                ErrorKind::KmsNotFound,
                format!("Key 'arn:aws:kms:{region}:{account}:key/{id}' does not exist"),
            )
        };
        let alias = if let Some(rest) = key_id.strip_prefix("arn:aws:kms:") {
            // arn:aws:kms:REGION:ACCOUNT:key/ID or …:alias/NAME
            let mut parts = rest.splitn(3, ':');
            let (arn_region, arn_account, resource) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            if arn_account != account || arn_region != region {
                return Err(kms_error(
                    ErrorKind::KmsAccessDenied,
                    format!(
                        "The ciphertext references a key that doesn't exist or that you don't \
                         have access to: {key_id}"
                    ),
                ));
            }
            if let Some(id) = resource.strip_prefix("key/") {
                return self.by_id(account, id).ok_or_else(|| not_found_key(id));
            }
            match resource.strip_prefix("alias/") {
                Some(_) => resource.to_string(),
                None => return Err(not_found_key(resource)),
            }
        } else if key_id.starts_with("alias/") {
            key_id.to_string()
        } else {
            return self
                .by_id(account, key_id)
                .ok_or_else(|| not_found_key(key_id));
        };
        if let Some(entry) = self.by_alias(account, &alias) {
            return Ok(entry);
        }
        if alias == AWS_MANAGED_ALIAS {
            return self.create_managed(account);
        }
        Err(kms_error(
            ErrorKind::KmsNotFound,
            format!("Alias arn:aws:kms:{region}:{account}:{alias} is not found."),
        ))
    }

    fn by_id(&self, account: &str, id: &str) -> Option<KeyEntry> {
        let found = self
            .keys
            .read()
            .keys
            .iter()
            .find(|k| k.account_id == account && k.id == id)
            .cloned();
        // A derived AWS-managed key (cluster mode) by its id.
        found.or_else(|| self.derived_managed(account).filter(|key| key.id == id))
    }

    fn by_alias(&self, account: &str, alias: &str) -> Option<KeyEntry> {
        let keys = self.keys.read();
        keys.find_alias(account, alias)
            .map(|at| keys.keys[at].clone())
    }

    fn by_arn(&self, arn: &str) -> Option<KeyEntry> {
        let found = self
            .keys
            .read()
            .keys
            .iter()
            .find(|k| k.arn() == arn)
            .cloned();
        found.or_else(|| {
            // A derived AWS-managed key (cluster mode), not made on this node yet.
            let account = arn
                .strip_prefix("arn:aws:kms:")?
                .strip_prefix(self.region.as_str())?
                .strip_prefix(':')?
                .split(':')
                .next()?;
            self.derived_managed(account).filter(|key| key.arn() == arn)
        })
    }

    /// Cluster mode: `account`'s AWS-managed key, derived from the key file's
    /// `managed_root` (HMAC-SHA256 of the region and account), the same on every node.
    fn derived_managed(&self, account: &str) -> Option<KeyEntry> {
        if !self.shared {
            return None;
        }
        let root = STANDARD
            .decode(self.keys.read().managed_root.as_ref()?)
            .ok()?;
        let root = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &root);
        let derive = |what: &str| {
            let message = format!("rivulet {what}\0{}\0{account}", self.region);
            aws_lc_rs::hmac::sign(&root, message.as_bytes())
        };
        let material = STANDARD.encode(derive("aws-managed kinesis key material").as_ref());
        let id_bytes: [u8; 16] = derive("aws-managed kinesis key id").as_ref()[..16]
            .try_into()
            .ok()?;
        let id = uuid::Builder::from_random_bytes(id_bytes).into_uuid();
        Some(self.managed_entry(id, account, material))
    }

    /// `account`'s AWS-managed key (`alias/aws/kinesis`) with this id and material.
    fn managed_entry(&self, id: uuid::Uuid, account: &str, material: String) -> KeyEntry {
        KeyEntry {
            id: id.to_string(),
            account_id: account.into(),
            region: self.region.clone(),
            description: MANAGED_DESCRIPTION.into(),
            state: KeyState::Enabled,
            aliases: vec![AWS_MANAGED_ALIAS.into()],
            aws_managed: true,
            material: vec![material],
        }
    }

    fn create_managed(&self, account: &str) -> Result<KeyEntry, ApiError> {
        if self.shared {
            return self.derived_managed(account).ok_or_else(|| {
                tracing::warn!(
                    "alias/aws/kinesis needs the key file's managed_root in cluster mode \
                     (rivulet kms init, then the same file on every node)"
                );
                kms_error(
                    ErrorKind::KmsNotFound,
                    format!(
                        "Alias arn:aws:kms:{}:{account}:{AWS_MANAGED_ALIAS} is not found.",
                        self.region
                    ),
                )
            });
        }
        let mut keys = self.keys.write();
        if let Some(at) = keys.find_alias(account, AWS_MANAGED_ALIAS) {
            return Ok(keys.keys[at].clone());
        }
        let material = random_material().map_err(|e| ApiError::internal(e.to_string()))?;
        let entry = self.managed_entry(uuid::Uuid::new_v4(), account, material);
        keys.keys.push(entry.clone());
        self.persist(&keys)?;
        Ok(entry)
    }

    fn usable(entry: &KeyEntry) -> Result<(), ApiError> {
        let arn = entry.arn();
        match entry.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(kms_error(
                ErrorKind::KmsDisabled,
                format!("{arn} is disabled."),
            )),
            KeyState::PendingDeletion => Err(kms_error(
                ErrorKind::KmsInvalidState,
                format!("{arn} is pending deletion."),
            )),
        }
    }
}

impl KeyService for LocalKms {
    fn resolve(&self, account: &str, key_id: &str) -> Result<String, ApiError> {
        let entry = self.lookup(account, key_id)?;
        LocalKms::usable(&entry)?;
        Ok(entry.arn())
    }

    fn check(&self, key_arn: &str) -> Result<(), ApiError> {
        let entry = self.by_arn(key_arn).ok_or_else(|| {
            kms_error(
                ErrorKind::KmsNotFound,
                format!("Key '{key_arn}' does not exist"),
            )
        })?;
        LocalKms::usable(&entry)
    }

    fn generate_data_key(&self, key_arn: &str) -> Result<([u8; 32], Vec<u8>), ApiError> {
        self.check(key_arn)?;
        let entry = self
            .by_arn(key_arn)
            .ok_or_else(|| ApiError::internal("key vanished"))?;
        let version = entry.material.len().checked_sub(1).ok_or_else(|| {
            ApiError::new(
                ErrorKind::KmsInvalidState,
                format!("{key_arn} has no key material."),
            )
        })?;
        let master = cipher(&entry.material[version]).ok_or_else(|| {
            ApiError::new(
                ErrorKind::KmsInvalidState,
                format!("{key_arn} has invalid key material."),
            )
        })?;
        let mut plain = [0u8; 32];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut plain)
            .and_then(|()| getrandom::fill(&mut nonce))
            .map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
        let mut sealed = plain.to_vec();
        master
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_arn.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| ApiError::internal("data key wrapping failed"))?;
        let mut wrapped = Vec::with_capacity(1 + 4 + NONCE_LEN + sealed.len());
        wrapped.push(WRAP_FORMAT);
        wrapped.extend_from_slice(&(version as u32).to_le_bytes());
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok((plain, wrapped))
    }

    fn decrypt_data_key(&self, key_arn: &str, wrapped: &[u8]) -> Result<[u8; 32], ApiError> {
        let denied = || {
            kms_error(
                ErrorKind::KmsAccessDenied,
                "The ciphertext references a key that doesn't exist or that you don't have \
                 access to.",
            )
        };
        let entry = self.by_arn(key_arn).ok_or_else(denied)?;
        if wrapped.len() < 1 + 4 + NONCE_LEN || wrapped[0] != WRAP_FORMAT {
            return Err(denied());
        }
        let version = u32::from_le_bytes([wrapped[1], wrapped[2], wrapped[3], wrapped[4]]);
        let master = entry
            .material
            .get(version as usize)
            .and_then(|m| cipher(m))
            .ok_or_else(denied)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wrapped[5..5 + NONCE_LEN]);
        let mut sealed = wrapped[5 + NONCE_LEN..].to_vec();
        let plain = master
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_arn.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| denied())?;
        <[u8; 32]>::try_from(&*plain).map_err(|_| denied())
    }
}

/// `rivulet kms …`: edits the key file a server reads.
pub fn run_cli(args: crate::config::KmsArgs) -> anyhow::Result<()> {
    use crate::config::KmsCommand;
    let path = args
        .kms_keys
        .or_else(crate::config::default_kms_keys)
        .context("no key file: give --kms-keys FILE")?;
    if let KmsCommand::OpenObject { path: object } = &args.command {
        use std::io::Write as _;
        let kms = LocalKms::open(Some(path.clone()), "us-east-1")?;
        let sealed =
            std::fs::read(object).with_context(|| format!("reading {}", object.display()))?;
        let plain = rivulet_channel::crypt::open(&kms, &sealed)
            .map_err(|e| anyhow::anyhow!("{}: {e}", object.display()))?;
        std::io::stdout().write_all(&plain)?;
        return Ok(());
    }
    let mut file = KeyFile::load(&path)?;
    let mut set_state = |key: &str, from: &[KeyState], to: KeyState| -> anyhow::Result<()> {
        let entry = file.find(key)?;
        if !from.contains(&entry.state) {
            anyhow::bail!("{} is {:?}", entry.arn(), entry.state);
        }
        entry.state = to;
        println!("{} {:?}", entry.arn(), to);
        Ok(())
    };
    match args.command {
        KmsCommand::Init => {
            file.ensure_managed_root()?;
            println!("{}", path.display());
        }
        KmsCommand::CreateKey {
            account_id,
            region,
            description,
            alias,
        } => {
            let entry = file.create_key(&account_id, &region, &description, alias.as_deref())?;
            println!("{} {}", entry.id, entry.arn());
        }
        KmsCommand::ListKeys => {
            for key in &file.keys {
                println!(
                    "{}\t{:?}\tversions={}\t{}",
                    key.arn(),
                    key.state,
                    key.material.len(),
                    key.aliases.join(",")
                );
            }
            return Ok(());
        }
        KmsCommand::EnableKey { key } => set_state(
            &key,
            &[KeyState::Enabled, KeyState::Disabled],
            KeyState::Enabled,
        )?,
        KmsCommand::DisableKey { key } => set_state(
            &key,
            &[KeyState::Enabled, KeyState::Disabled],
            KeyState::Disabled,
        )?,
        KmsCommand::ScheduleKeyDeletion { key } => set_state(
            &key,
            &[KeyState::Enabled, KeyState::Disabled],
            KeyState::PendingDeletion,
        )?,
        KmsCommand::CancelKeyDeletion { key } => {
            set_state(&key, &[KeyState::PendingDeletion], KeyState::Disabled)?
        }
        KmsCommand::OpenObject { .. } => return Ok(()),
        KmsCommand::RotateKey { key } => {
            let entry = file.find(&key)?;
            entry.material.push(random_material()?);
            println!("{} version {}", entry.arn(), entry.material.len());
        }
    }
    file.save(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_sharing_a_key_file_derive_the_same_managed_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        // Without the root, a cluster node has no AWS-managed key (and writes nothing).
        KeyFile::default().save(&path).unwrap();
        let rootless = LocalKms::open_shared(path.clone(), "us-east-1").unwrap();
        let missing = rootless
            .resolve("000000000000", AWS_MANAGED_ALIAS)
            .unwrap_err();
        assert_eq!(missing.kind, ErrorKind::KmsNotFound);
        assert_eq!(KeyFile::load(&path).unwrap(), KeyFile::default());

        let file = KeyFile {
            managed_root: Some(random_material().unwrap()),
            ..KeyFile::default()
        };
        file.save(&path).unwrap();
        let (one, two) = (
            LocalKms::open_shared(path.clone(), "us-east-1").unwrap(),
            LocalKms::open_shared(path.clone(), "us-east-1").unwrap(),
        );
        let arn = one.resolve("000000000000", AWS_MANAGED_ALIAS).unwrap();
        // The other node unwraps by ARN alone, before resolving the alias itself.
        let (plain, wrapped) = one.generate_data_key(&arn).unwrap();
        assert_eq!(two.decrypt_data_key(&arn, &wrapped).unwrap(), plain);
        assert_eq!(two.resolve("000000000000", AWS_MANAGED_ALIAS).unwrap(), arn);
        // By its ARN or id too, as on one node.
        assert_eq!(two.resolve("000000000000", &arn).unwrap(), arn);
        let id = arn.rsplit('/').next().unwrap();
        assert_eq!(two.resolve("000000000000", id).unwrap(), arn);
        // Each account its own key; the file is never written.
        let other = one.resolve("111111111111", AWS_MANAGED_ALIAS).unwrap();
        assert_ne!(other, arn);
        assert!(other.starts_with("arn:aws:kms:us-east-1:111111111111:key/"));
        assert_eq!(KeyFile::load(&path).unwrap(), file);
    }

    #[test]
    fn keys_resolve_wrap_and_follow_their_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let mut file = KeyFile::default();
        let key = file
            .create_key("000000000000", "us-east-1", "orders", Some("alias/orders"))
            .unwrap();
        file.save(&path).unwrap();
        let kms = LocalKms::open(Some(path.clone()), "us-east-1").unwrap();
        let arn = key.arn();
        for id in [
            key.id.as_str(),
            arn.as_str(),
            "alias/orders",
            "arn:aws:kms:us-east-1:000000000000:alias/orders",
        ] {
            assert_eq!(kms.resolve("000000000000", id).unwrap(), arn, "{id}");
        }
        let missing = kms.resolve("000000000000", "alias/nope").unwrap_err();
        assert_eq!(missing.kind, ErrorKind::KmsNotFound);
        assert_eq!(
            missing.message,
            "Alias arn:aws:kms:us-east-1:000000000000:alias/nope is not found."
        );
        let other_account = kms.resolve("111111111111", &arn).unwrap_err();
        assert_eq!(other_account.kind, ErrorKind::KmsAccessDenied);

        // The AWS-managed key appears on first use and is written to the file.
        let managed = kms.resolve("000000000000", AWS_MANAGED_ALIAS).unwrap();
        assert_eq!(
            kms.resolve("000000000000", AWS_MANAGED_ALIAS).unwrap(),
            managed
        );
        assert!(
            KeyFile::load(&path)
                .unwrap()
                .keys
                .iter()
                .any(|k| k.aws_managed)
        );

        // Wrap, rotate, and still unwrap what the old material wrapped.
        let (plain, wrapped) = kms.generate_data_key(&arn).unwrap();
        let mut file = KeyFile::load(&path).unwrap();
        file.find("alias/orders")
            .unwrap()
            .material
            .push(random_material().unwrap());
        file.save(&path).unwrap();
        // Some file systems keep whole-second times: make the change visible.
        *kms.seen.lock() = None;
        kms.reload_if_changed();
        assert_eq!(kms.decrypt_data_key(&arn, &wrapped).unwrap(), plain);
        let (plain2, wrapped2) = kms.generate_data_key(&arn).unwrap();
        assert_eq!(wrapped2[1], 1, "new data keys use the newest material");
        assert_eq!(kms.decrypt_data_key(&arn, &wrapped2).unwrap(), plain2);
        let mut tampered = wrapped2.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            kms.decrypt_data_key(&arn, &tampered).unwrap_err().kind,
            ErrorKind::KmsAccessDenied
        );

        // Disabled and pending-deletion keys refuse use with KMS's exceptions.
        for (state, kind, message) in [
            (
                KeyState::Disabled,
                ErrorKind::KmsDisabled,
                format!("{arn} is disabled."),
            ),
            (
                KeyState::PendingDeletion,
                ErrorKind::KmsInvalidState,
                format!("{arn} is pending deletion."),
            ),
        ] {
            let mut file = KeyFile::load(&path).unwrap();
            file.find(&arn).unwrap().state = state;
            file.save(&path).unwrap();
            *kms.seen.lock() = None;
            kms.reload_if_changed();
            let error = kms.check(&arn).unwrap_err();
            assert_eq!((error.kind, error.message), (kind, message));
            assert_eq!(
                kms.resolve("000000000000", "alias/orders")
                    .unwrap_err()
                    .kind,
                kind
            );
        }
    }
}
