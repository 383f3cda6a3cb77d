//! Streaming tables: Apache Iceberg tables in a table bucket (S3 Tables destinations), through
//! `iceberg` 0.10.
//!
//! - **Catalog.** With `--iceberg-catalog URL` a table bucket is the warehouse (its ARN) of
//!   that REST catalog (SeaweedFS's, or S3 Tables' own endpoint), its data files on the S3
//!   endpoint. Without it, a table bucket is a folder under the table-bucket dir holding a SQL
//!   catalog on sqlite (`catalog.db`, the JDBC catalog's tables, which pyiceberg's
//!   `SqlCatalog` reads) and its warehouse (`warehouse/`).
//! - **Schema.** We have no Glue Schema Registry; `GSRSchemaARN`
//!   (`arn:aws:glue:REGION:ACCOUNT:schema/REGISTRY/NAME`) names the JSON Schema document
//!   `<schema dir>/REGISTRY/NAME.json`, mapped to Iceberg types as AWS documents it. The table
//!   is created from it when missing; an existing table keeps its own schema.
//! - **Rows.** Each JSON record is decoded (arrow-json) against the table's schema: fields not
//!   in the schema are dropped, missing optional ones are null, a record that does not fit is
//!   a dead letter with the reason.
//! - **Each record once.** A commit is one fast append whose snapshot properties name the
//!   channel and the delivery number (`rivulet.channel-id`, `rivulet.delivery`) and the shard
//!   ranges; a delivery redone after a crash first looks for its snapshot.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use iceberg::spec::{
    DataFileFormat, ListType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType,
    Transform, Type, UnboundPartitionSpec,
};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::unpartitioned_writer::UnpartitionedWriter;
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rivulet_engine::channels::{ChannelMeta, Destination, TableTarget};

/// Rows that fit the table's schema, and the records that do not (by index, with why).
pub type Decoded = (Option<RecordBatch>, Vec<(usize, String)>);

/// Snapshot properties a channel's commit carries.
pub const CHANNEL_PROPERTY: &str = "rivulet.channel-id";
pub const DELIVERY_PROPERTY: &str = "rivulet.delivery";
pub const RANGES_PROPERTY: &str = "rivulet.shard-ranges";

/// Where table buckets and schemas are.
#[derive(Debug, Clone, Default)]
pub struct TableSettings {
    /// An Iceberg REST catalog; `None`: a SQL catalog per local table bucket.
    pub catalog_uri: Option<String>,
    /// `client_id:secret` for the REST catalog's OAuth2 token endpoint.
    pub catalog_credential: Option<String>,
    /// The S3 endpoint of a REST catalog's data files.
    pub s3_endpoint: Option<String>,
    pub region: String,
    /// Local table buckets: a folder each.
    pub table_bucket_dir: Option<PathBuf>,
    /// JSON Schema documents named by GSRSchemaARN.
    pub schema_dir: Option<PathBuf>,
}

/// Every table bucket's catalog, opened on first use.
pub struct Tables {
    settings: TableSettings,
    catalogs: tokio::sync::Mutex<HashMap<String, Arc<dyn Catalog>>>,
}

fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// The name in `arn:aws:s3tables:REGION:ACCOUNT:bucket/NAME`.
pub fn table_bucket_name(arn: &str) -> Option<&str> {
    arn.split_once(":bucket/")
        .map(|(_, name)| name)
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

fn target(meta: &ChannelMeta) -> Result<&TableTarget, String> {
    match &meta.destination {
        Destination::Tables(table) => Ok(table),
        Destination::S3(_) => Err("the channel does not deliver to a streaming table".into()),
    }
}

impl Tables {
    pub fn new(settings: TableSettings) -> Tables {
        Tables {
            settings,
            catalogs: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The catalog of the channel's table bucket (one per bucket and encryption key: data
    /// files on S3 carry SSE-KMS headers naming the channel's key).
    async fn catalog(&self, meta: &ChannelMeta) -> Result<Arc<dyn Catalog>, String> {
        let arn = target(meta)?.table_bucket_arn.as_str();
        let bucket = table_bucket_name(arn)
            .ok_or_else(|| format!("Invalid TableBucketARN {arn}."))?
            .to_string();
        let id = format!(
            "{bucket}|{}",
            meta.encryption_key.as_deref().unwrap_or_default()
        );
        let mut catalogs = self.catalogs.lock().await;
        if let Some(catalog) = catalogs.get(&id) {
            return Ok(catalog.clone());
        }
        let catalog: Arc<dyn Catalog> = match &self.settings.catalog_uri {
            Some(uri) => {
                let mut props = HashMap::from([
                    ("uri".to_string(), uri.clone()),
                    ("warehouse".to_string(), arn.to_string()),
                    ("s3.region".to_string(), self.settings.region.clone()),
                    ("s3.path-style-access".to_string(), "true".to_string()),
                ]);
                if let Some(credential) = &self.settings.catalog_credential {
                    props.insert("credential".into(), credential.clone());
                    props.insert(
                        "oauth2-server-uri".into(),
                        format!("{}/v1/oauth/tokens", uri.trim_end_matches('/')),
                    );
                }
                if let Some(endpoint) = &self.settings.s3_endpoint {
                    props.insert("s3.endpoint".into(), endpoint.clone());
                }
                if let Some(key) = &meta.encryption_key {
                    props.insert("s3.sse.type".into(), "kms".into());
                    props.insert("s3.sse.key".into(), key.clone());
                }
                for (variable, property) in [
                    ("AWS_ACCESS_KEY_ID", "s3.access-key-id"),
                    ("AWS_SECRET_ACCESS_KEY", "s3.secret-access-key"),
                    ("AWS_SESSION_TOKEN", "s3.session-token"),
                ] {
                    if let Ok(value) = std::env::var(variable) {
                        props.insert(property.into(), value);
                    }
                }
                let catalog = iceberg_catalog_rest::RestCatalogBuilder::default()
                    .with_storage_factory(Arc::new(
                        iceberg_storage_opendal::OpenDalStorageFactory::S3 {
                            customized_credential_load: None,
                        },
                    ))
                    .load("rest", props)
                    .await
                    .map_err(|e| format!("The Iceberg REST catalog {uri} cannot be used: {e}"))?;
                // The catalog answers for the bucket only if it exists.
                catalog.list_namespaces(None).await.map_err(|e| {
                    format!("The table bucket {bucket} cannot be reached through {uri}: {e}")
                })?;
                Arc::new(catalog)
            }
            None => {
                if meta.encryption_key.is_some() {
                    return Err(
                        "Encrypting table data files with a KMS key needs an Iceberg \
                                REST catalog with data on S3 (--iceberg-catalog, SSE-KMS); \
                                table buckets in folders are not encrypted: create the channel \
                                without EncryptionConfiguration."
                            .to_string(),
                    );
                }
                let root = self.settings.table_bucket_dir.as_ref().ok_or_else(|| {
                    format!(
                        "No table buckets are configured, so table bucket {bucket} cannot be \
                         reached: start the server with --iceberg-catalog URL, or with a data \
                         dir (table buckets are folders under --table-bucket-dir)."
                    )
                })?;
                let dir = root.join(&bucket);
                if !dir.is_dir() {
                    return Err(format!(
                        "The specified table bucket does not exist: {bucket} (no folder {}).",
                        dir.display()
                    ));
                }
                std::fs::create_dir_all(dir.join("warehouse")).map_err(text)?;
                let props = HashMap::from([
                    (
                        iceberg_catalog_sql::SQL_CATALOG_PROP_URI.to_string(),
                        format!("sqlite:{}?mode=rwc", dir.join("catalog.db").display()),
                    ),
                    (
                        iceberg_catalog_sql::SQL_CATALOG_PROP_WAREHOUSE.to_string(),
                        format!("file://{}", dir.join("warehouse").display()),
                    ),
                    (
                        iceberg_catalog_sql::SQL_CATALOG_PROP_BIND_STYLE.to_string(),
                        "QMark".to_string(),
                    ),
                ]);
                let catalog = iceberg_catalog_sql::SqlCatalogBuilder::default()
                    .with_storage_factory(Arc::new(iceberg::io::LocalFsStorageFactory))
                    .load(bucket.clone(), props)
                    .await
                    .map_err(|e| format!("The catalog of table bucket {bucket}: {e}"))?;
                Arc::new(catalog)
            }
        };
        catalogs.insert(id, catalog.clone());
        Ok(catalog)
    }

    /// The JSON Schema document GSRSchemaARN names, as an Iceberg schema.
    fn schema_of(&self, meta: &ChannelMeta) -> Result<Schema, String> {
        let arn = meta
            .schema_arn
            .as_deref()
            .ok_or("The channel has no GSRSchemaARN.")?;
        let (registry, name) = arn
            .split_once(":schema/")
            .and_then(|(_, rest)| rest.split_once('/'))
            .ok_or_else(|| format!("Invalid GSRSchemaARN {arn}."))?;
        let dir = self.settings.schema_dir.as_ref().ok_or_else(|| {
            "No schema dir is configured (--schema-dir): GSRSchemaARN names a JSON Schema \
             file there."
                .to_string()
        })?;
        let path = dir.join(registry).join(format!("{name}.json"));
        let document = std::fs::read(&path).map_err(|e| {
            format!(
                "The schema {arn} does not exist: {} cannot be read ({e}).",
                path.display()
            )
        })?;
        let document: Doc = serde_json::from_slice(&document)
            .map_err(|e| format!("The schema {} is not JSON: {e}.", path.display()))?;
        let table = target(meta)?;
        let partition_source: Vec<&str> = table
            .partition
            .iter()
            .flatten()
            .map(|(_, source)| source.as_str())
            .collect();
        json_schema_to_iceberg(&document, &partition_source)
    }

    /// Checks the destination and makes its namespace and table if they are missing.
    pub async fn check(&self, meta: &ChannelMeta) -> Result<(), String> {
        self.table(meta).await.map(|_| ())
    }

    /// The channel's table, created from its schema when missing.
    pub async fn table(&self, meta: &ChannelMeta) -> Result<iceberg::table::Table, String> {
        let table = target(meta)?;
        let catalog = self.catalog(meta).await?;
        let namespace = NamespaceIdent::new(table.namespace.clone());
        let ident = TableIdent::new(namespace.clone(), table.table.clone());
        if catalog.table_exists(&ident).await.map_err(text)? {
            return catalog.load_table(&ident).await.map_err(text);
        }
        let schema = self.schema_of(meta)?;
        if !catalog.namespace_exists(&namespace).await.map_err(text)?
            && let Err(error) = catalog.create_namespace(&namespace, HashMap::new()).await
            && error.kind() != iceberg::ErrorKind::NamespaceAlreadyExists
        {
            return Err(format!("Creating namespace {}: {error}", table.namespace));
        }
        let mut spec = UnboundPartitionSpec::builder();
        for (transform, source) in table.partition.iter().flatten() {
            if transform != "TIME_HOUR" {
                return Err(format!("Partition transform {transform} is not supported."));
            }
            let field = schema.field_by_name(source).ok_or_else(|| {
                format!("The partition source column {source} is not in the schema.")
            })?;
            if *field.field_type != Type::Primitive(PrimitiveType::Timestamptz) {
                return Err(format!(
                    "The partition source column {source} must be of the timestamptz type."
                ));
            }
            spec = spec
                .add_partition_field(field.id, format!("{source}_hour"), Transform::Hour)
                .map_err(text)?;
        }
        let compression = match table.compression.as_str() {
            "ZSTD" => "zstd",
            "SNAPPY" => "snappy",
            _ => "uncompressed",
        };
        let creation = TableCreation::builder()
            .name(table.table.clone())
            .schema(schema)
            .partition_spec(spec.build())
            .properties(HashMap::from([(
                "write.parquet.compression-codec".to_string(),
                compression.to_string(),
            )]))
            .build();
        match catalog.create_table(&namespace, creation).await {
            Ok(created) => Ok(created),
            Err(error) if error.kind() == iceberg::ErrorKind::TableAlreadyExists => {
                catalog.load_table(&ident).await.map_err(text)
            }
            Err(error) => Err(format!(
                "Creating table {}.{}: {error}",
                table.namespace, table.table
            )),
        }
    }

    /// Whether delivery `number` of the channel is committed to `table` (a snapshot carries
    /// it).
    pub fn committed(table: &iceberg::table::Table, meta: &ChannelMeta, number: u64) -> bool {
        let number = number.to_string();
        table.metadata().snapshots().any(|snapshot| {
            let properties = &snapshot.summary().additional_properties;
            properties.get(CHANNEL_PROPERTY) == Some(&meta.id)
                && properties.get(DELIVERY_PROPERTY) == Some(&number)
        })
    }

    /// Splits JSON records into rows of the table's schema and the rejected ones (by index,
    /// with the reason).
    pub async fn rows(
        table: &iceberg::table::Table,
        records: &[bytes::Bytes],
    ) -> Result<Decoded, String> {
        let schema = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(text)?,
        );
        let records = records.to_vec();
        tokio::task::spawn_blocking(move || decode(schema, &records))
            .await
            .map_err(text)?
    }

    /// Appends `rows` to `table` (the channel's, as `table` loaded it) as delivery `number`,
    /// the shard ranges in the snapshot's properties.
    pub async fn append(
        &self,
        meta: &ChannelMeta,
        table: &iceberg::table::Table,
        number: u64,
        ranges: &str,
        rows: RecordBatch,
    ) -> Result<(), String> {
        let table_target = target(meta)?;
        let catalog = self.catalog(meta).await?;
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let compression = match table_target.compression.as_str() {
            "ZSTD" => Compression::ZSTD(ZstdLevel::try_new(3).map_err(text)?),
            "SNAPPY" => Compression::SNAPPY,
            _ => Compression::UNCOMPRESSED,
        };
        let properties = WriterProperties::builder()
            .set_compression(compression)
            .build();
        let parquet = ParquetWriterBuilder::new(properties, schema.clone());
        let locations = DefaultLocationGenerator::new(metadata).map_err(text)?;
        // Unique per attempt: a retried delivery never overwrites a committed file.
        let names = DefaultFileNameGenerator::new(
            format!("{}-{number:016}-{}", meta.id, uuid::Uuid::now_v7()),
            None,
            DataFileFormat::Parquet,
        );
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            128 << 20,
            table.file_io().clone(),
            locations,
            names,
        );
        let builder = DataFileWriterBuilder::new(rolling);
        let spec = metadata.default_partition_spec().clone();
        let data_files = if spec.is_unpartitioned() {
            let mut writer = UnpartitionedWriter::new(builder);
            writer.write(rows).await.map_err(text)?;
            writer.close().await.map_err(text)?
        } else {
            let splitter =
                iceberg::arrow::RecordBatchPartitionSplitter::try_new_with_computed_values(
                    schema.clone(),
                    spec.clone(),
                )
                .map_err(text)?;
            let mut writer = FanoutWriter::new(builder);
            for (key, part) in splitter.split(&rows).map_err(text)? {
                writer.write(key, part).await.map_err(text)?;
            }
            writer.close().await.map_err(text)?
        };
        let transaction = Transaction::new(table);
        let action = transaction
            .fast_append()
            .add_data_files(data_files)
            .set_snapshot_properties(HashMap::from([
                (CHANNEL_PROPERTY.to_string(), meta.id.clone()),
                (DELIVERY_PROPERTY.to_string(), number.to_string()),
                (RANGES_PROPERTY.to_string(), ranges.to_string()),
            ]));
        let transaction = action.apply(transaction).map_err(text)?;
        transaction.commit(catalog.as_ref()).await.map_err(|e| {
            format!(
                "Committing to {}.{}: {e}",
                table_target.namespace, table_target.table
            )
        })?;
        Ok(())
    }
}

/// Decodes each record on its own (to find those that do not fit), then the fitting ones
/// together.
fn decode(schema: arrow_schema::SchemaRef, records: &[bytes::Bytes]) -> Result<Decoded, String> {
    // Most deliveries hold only fitting records: one pass of arrow-json's tape decoder over
    // all of them. Any error (or a record that held more than one document) falls back to
    // deciding record by record.
    if let Some(batch) = decode_all(schema.clone(), records) {
        return Ok((Some(batch), Vec::new()));
    }
    let mut rejected = Vec::new();
    let mut fitting = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let one = || -> Result<(), String> {
            let value: serde_json::Value = serde_json::from_slice(record)
                .map_err(|e| format!("The record is not valid JSON: {e}."))?;
            if !value.is_object() {
                return Err("The record is not a JSON object.".into());
            }
            let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
                .build_decoder()
                .map_err(text)?;
            decoder
                .serialize(std::slice::from_ref(&value))
                .map_err(|e| format!("The record does not fit the table's schema: {e}."))?;
            decoder
                .flush()
                .map_err(|e| format!("The record does not fit the table's schema: {e}."))?;
            Ok(())
        };
        match one() {
            Ok(()) => fitting.push(index),
            Err(reason) => rejected.push((index, reason)),
        }
    }
    if fitting.is_empty() {
        return Ok((None, rejected));
    }
    let mut decoder = arrow_json::ReaderBuilder::new(schema)
        .with_batch_size(fitting.len())
        .build_decoder()
        .map_err(text)?;
    let values: Vec<serde_json::Value> = fitting
        .iter()
        .filter_map(|&i| serde_json::from_slice(&records[i]).ok())
        .collect();
    decoder.serialize(&values).map_err(text)?;
    let batch = decoder.flush().map_err(text)?;
    Ok((batch, rejected))
}

/// Every record as one row, or `None` when any does not decode as exactly one row.
fn decode_all(schema: arrow_schema::SchemaRef, records: &[bytes::Bytes]) -> Option<RecordBatch> {
    if records.is_empty() {
        return None;
    }
    let mut buffer = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
    for record in records {
        if !record.trim_ascii_start().starts_with(b"{") {
            return None;
        }
        buffer.extend_from_slice(record);
        buffer.push(b'\n');
    }
    let mut decoder = arrow_json::ReaderBuilder::new(schema)
        .with_batch_size(records.len() + 1)
        .build_decoder()
        .ok()?;
    let consumed = decoder.decode(&buffer).ok()?;
    if consumed != buffer.len() {
        return None;
    }
    let batch = decoder.flush().ok()??;
    (batch.num_rows() == records.len()).then_some(batch)
}

/// A JSON document that keeps its objects' keys in the order written (serde_json's `Value`
/// sorts them), so a table's columns come in the schema's order.
#[derive(Debug, Clone)]
pub enum Doc {
    Map(Vec<(String, Doc)>),
    List(Vec<Doc>),
    Scalar(serde_json::Value),
}

impl Doc {
    fn get(&self, key: &str) -> Option<&Doc> {
        match self {
            Doc::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn entries(&self) -> Option<&[(String, Doc)]> {
        match self {
            Doc::Map(entries) => Some(entries),
            _ => None,
        }
    }
    fn items(&self) -> Option<&[Doc]> {
        match self {
            Doc::List(items) => Some(items),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            Doc::Scalar(serde_json::Value::String(text)) => Some(text),
            _ => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Doc {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Doc, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Doc;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Doc, E> {
                Ok(Doc::Scalar(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Doc, E> {
                Ok(Doc::Scalar(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Doc, E> {
                Ok(Doc::Scalar(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Doc, E> {
                Ok(Doc::Scalar(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Doc, E> {
                Ok(Doc::Scalar(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Doc, E> {
                Ok(Doc::Scalar(serde_json::Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Doc, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Doc::List(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Doc::Map(entries))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A JSON Schema document as an Iceberg schema, as AWS maps GSR JSON schemas: string (with
/// `format` date-time → timestamptz, date → date), integer → long, number → double, boolean,
/// object with properties → struct, array → list, enum → string; `required` fields (and the
/// partition source columns) are required.
pub fn json_schema_to_iceberg(document: &Doc, partition_source: &[&str]) -> Result<Schema, String> {
    let mut next_id = 0;
    let fields = struct_fields(document, &mut next_id, partition_source, 0)?;
    Schema::builder()
        .with_schema_id(0)
        .with_fields(fields)
        .build()
        .map_err(text)
}

fn struct_fields(
    document: &Doc,
    next_id: &mut i32,
    forced_required: &[&str],
    depth: usize,
) -> Result<Vec<NestedFieldRef>, String> {
    if depth > 16 {
        return Err("The schema nests more than 16 levels.".into());
    }
    let properties = document
        .get("properties")
        .and_then(Doc::entries)
        .ok_or("The schema's root (or an object in it) has no properties.")?;
    let required: Vec<&str> = document
        .get("required")
        .and_then(Doc::items)
        .map(|r| r.iter().filter_map(Doc::as_str).collect())
        .unwrap_or_default();
    let mut fields = Vec::new();
    for (name, property) in properties {
        *next_id += 1;
        let id = *next_id;
        let field_type = json_type(property, next_id, depth)?;
        let field = if required.contains(&name.as_str()) || forced_required.contains(&name.as_str())
        {
            NestedField::required(id, name, field_type)
        } else {
            NestedField::optional(id, name, field_type)
        };
        fields.push(Arc::new(field));
    }
    Ok(fields)
}

fn json_type(property: &Doc, next_id: &mut i32, depth: usize) -> Result<Type, String> {
    if property.get("enum").is_some() {
        return Ok(Type::Primitive(PrimitiveType::String));
    }
    let kind = match property.get("type") {
        Some(Doc::Scalar(serde_json::Value::String(kind))) => kind.as_str(),
        // ["string", "null"]: the first type that is not null.
        Some(Doc::List(kinds)) => kinds
            .iter()
            .filter_map(Doc::as_str)
            .find(|k| *k != "null")
            .unwrap_or("string"),
        _ => return Err("A property of the schema has no type.".to_string()),
    };
    Ok(match kind {
        "string" => match property.get("format").and_then(Doc::as_str) {
            Some("date-time") => Type::Primitive(PrimitiveType::Timestamptz),
            Some("date") => Type::Primitive(PrimitiveType::Date),
            _ => Type::Primitive(PrimitiveType::String),
        },
        "integer" => Type::Primitive(PrimitiveType::Long),
        "number" => Type::Primitive(PrimitiveType::Double),
        "boolean" => Type::Primitive(PrimitiveType::Boolean),
        "object" => Type::Struct(StructType::new(struct_fields(
            property,
            next_id,
            &[],
            depth + 1,
        )?)),
        "array" => {
            let items = property
                .get("items")
                .ok_or("An array property has no items.")?;
            *next_id += 1;
            let element_id = *next_id;
            let element = json_type(items, next_id, depth + 1)?;
            Type::List(ListType::new(Arc::new(NestedField::list_element(
                element_id, element, false,
            ))))
        }
        other => return Err(format!("The JSON Schema type {other} is not supported.")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_schemas_map_to_iceberg_types() {
        let document: Doc = serde_json::from_str(
            r#"{
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "integer"},
                "at": {"type": "string", "format": "date-time"},
                "name": {"type": ["string", "null"]},
                "price": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "where": {"type": "object", "properties": {"city": {"type": "string"}}}
            }}"#,
        )
        .unwrap();
        let schema = json_schema_to_iceberg(&document, &["at"]).unwrap();
        // Columns in the order the schema declares them.
        let names: Vec<&str> = schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["id", "at", "name", "price", "tags", "where"]);
        let field = |name: &str| schema.field_by_name(name).unwrap().clone();
        assert!(field("id").required);
        assert!(field("at").required, "a partition source is required");
        assert!(!field("name").required);
        assert_eq!(
            *field("at").field_type,
            Type::Primitive(PrimitiveType::Timestamptz)
        );
        assert_eq!(
            *field("price").field_type,
            Type::Primitive(PrimitiveType::Double)
        );
        assert!(matches!(*field("tags").field_type, Type::List(_)));
        assert!(matches!(*field("where").field_type, Type::Struct(_)));
        let empty: Doc = serde_json::from_str(r#"{"type": "object"}"#).unwrap();
        assert!(json_schema_to_iceberg(&empty, &[]).is_err());
    }

    #[test]
    fn records_that_do_not_fit_are_rejected_with_the_reason() {
        let document: Doc = serde_json::from_str(
            r#"{"type": "object", "required": ["id"],
                "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}"#,
        )
        .unwrap();
        let schema = json_schema_to_iceberg(&document, &[]).unwrap();
        let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema).unwrap());
        let records: Vec<bytes::Bytes> = [
            r#"{"id": 1, "name": "a", "extra": true}"#,
            r#"not json"#,
            r#"{"name": "no id"}"#,
            r#"{"id": "x"}"#,
            r#"{"id": 2}"#,
        ]
        .iter()
        .map(|r| bytes::Bytes::from(r.to_string()))
        .collect();
        let (batch, rejected) = decode(arrow.clone(), &records).unwrap();
        assert_eq!(batch.unwrap().num_rows(), 2);
        // All fitting: one pass; a record holding two documents is not two rows.
        let fitting = [records[0].clone(), records[4].clone()];
        assert_eq!(decode_all(arrow.clone(), &fitting).unwrap().num_rows(), 2);
        let two = bytes::Bytes::from_static(b"{\"id\": 3}\n{\"id\": 4}");
        assert!(decode_all(arrow.clone(), std::slice::from_ref(&two)).is_none());
        let (batch, rejected_two) = decode(arrow, &[two]).unwrap();
        assert!(batch.is_none());
        assert_eq!(rejected_two.len(), 1);
        let indexes: Vec<usize> = rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [1, 2, 3], "{rejected:?}");
    }
}
