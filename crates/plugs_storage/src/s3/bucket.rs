//! Bucket configuration for `plugs-api bucket`: default encryption, public access blocked, the
//! lifecycle rules and CORS rule the service needs, versioning and replication. Inherent methods
//! of [`S3Store`]: only S3 has these.
//!
//! S3 replaces a bucket's whole lifecycle (and CORS, and replication) configuration on each
//! put, so rules are merged: ours are recognised by their id prefix [`RULE_PREFIX`], the others
//! are kept as they are, and a rule of someone else's that does the same job on an overlapping
//! prefix is a conflict that only `force` replaces.

use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketVersioningStatus,
    CorsConfiguration, CorsRule, DeleteMarkerReplication, DeleteMarkerReplicationStatus,
    Destination, EncryptionConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleAndOperator, LifecycleRuleFilter, PublicAccessBlockConfiguration,
    ReplicationConfiguration, ReplicationRule, ReplicationRuleFilter, ReplicationRuleStatus,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    SourceSelectionCriteria, SseKmsEncryptedObjects, SseKmsEncryptedObjectsStatus, Tag, Transition,
    TransitionStorageClass, VersioningConfiguration,
};

use super::{S3Store, map_error};
use crate::{ORIGINAL_TAG, Result, ServerSideEncryption, StoreError};

/// The id prefix of every rule this service writes; rules without it are someone else's.
pub const RULE_PREFIX: &str = "plugs-media-";
/// Our rule aborting incomplete multipart uploads anywhere in the bucket.
pub const ABORT_RULE_ID: &str = "plugs-media-abort-incomplete-multipart";
/// Our rule expiring the direct-upload staging prefix.
pub const STAGING_RULE_ID: &str = "plugs-media-expire-staging";
/// Our CORS rule.
pub const CORS_RULE_ID: &str = "plugs-media-browser-uploads";
/// Our replication rule.
pub const REPLICATION_RULE_ID: &str = "plugs-media-replicate-events";
/// Our rule moving originals (objects tagged [`ORIGINAL_TAG`]) to a colder storage class.
pub const ARCHIVE_RULE_ID: &str = "plugs-media-archive-originals";

/// Automatic archiving: originals under `prefix` move to `storage_class` `after_days` days after
/// they were written. Selected by [`ORIGINAL_TAG`], which uploads write on originals only, so
/// derived versions (thumbnails, display copies) stay in the hot class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRule {
    /// Days after creation.
    pub after_days: i32,
    /// An S3 transition class: `STANDARD_IA`, `ONEZONE_IA`, `INTELLIGENT_TIERING`,
    /// `GLACIER_IR`, `GLACIER` or `DEEP_ARCHIVE` (the last two need a restore before a
    /// download: those answer 409).
    pub storage_class: String,
    /// The media prefix, `events/`.
    pub prefix: String,
}

impl ArchiveRule {
    /// Checks the class and the days against what S3 accepts: a known class, at least one day,
    /// and at least 30 for the infrequent-access classes.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let class = self.storage_class.as_str();
        if !TransitionStorageClass::values().contains(&class) {
            return Err(format!(
                "unknown storage class {class:?}: one of {}",
                TransitionStorageClass::values().join(", ")
            ));
        }
        let minimum = if class.ends_with("_IA") { 30 } else { 1 };
        if self.after_days < minimum {
            return Err(format!(
                "S3 moves objects to {class} after {minimum} day(s) at the earliest, not {}",
                self.after_days
            ));
        }
        Ok(())
    }
}

/// What `bucket init` asks of the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSetup {
    /// The bucket's default encryption; [`ServerSideEncryption::None`] leaves it alone.
    pub encryption: ServerSideEncryption,
    /// Incomplete multipart uploads are aborted this many days after they started.
    pub abort_multipart_days: i32,
    /// Staged direct uploads (under [`BucketSetup::staging_prefix`]) expire after this many days.
    pub staging_expire_days: i32,
    /// The direct-upload staging prefix, `uploads/`.
    pub staging_prefix: String,
    /// Browser origins allowed to GET, HEAD and PUT presigned URLs; empty: no CORS rule of ours.
    pub cors_origins: Vec<String>,
    /// Automatic archiving of originals; `None` (the default): no transition rule of ours.
    pub archive: Option<ArchiveRule>,
}

/// A lifecycle rule reduced to what this module compares and prints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleShape {
    id: String,
    prefix: String,
    enabled: bool,
    abort_days: Option<i32>,
    expire_days: Option<i32>,
    /// `(days, class)` of each transition by age.
    transitions: Vec<(Option<i32>, String)>,
    /// The filter's tags, `key=value`.
    tags: Vec<String>,
    other_actions: bool,
}

impl RuleShape {
    fn of(rule: &LifecycleRule) -> Self {
        #[allow(deprecated, reason = "old rules carry their prefix outside the filter")]
        let prefix = rule
            .filter()
            .and_then(|f| f.prefix().or_else(|| f.and().and_then(|a| a.prefix())))
            .or(rule.prefix())
            .unwrap_or_default()
            .to_owned();
        Self {
            id: rule.id().unwrap_or_default().to_owned(),
            prefix,
            enabled: *rule.status() == ExpirationStatus::Enabled,
            abort_days: rule
                .abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation()),
            expire_days: rule.expiration().and_then(|e| e.days()),
            transitions: rule
                .transitions()
                .iter()
                .map(|t| {
                    (
                        t.days(),
                        t.storage_class()
                            .map(|c| c.as_str().to_owned())
                            .unwrap_or_default(),
                    )
                })
                .collect(),
            tags: rule
                .filter()
                .map(|f| {
                    f.tag()
                        .into_iter()
                        .chain(f.and().map(|a| a.tags()).unwrap_or_default())
                        .map(|t| format!("{}={}", t.key(), t.value()))
                        .collect()
                })
                .unwrap_or_default(),
            other_actions: rule.transitions().iter().any(|t| t.date().is_some())
                || !rule.noncurrent_version_transitions().is_empty()
                || rule.noncurrent_version_expiration().is_some()
                || rule.expiration().is_some_and(|e| e.date().is_some()),
        }
    }

    fn describe(&self) -> String {
        let mut actions = Vec::new();
        if let Some(days) = self.abort_days {
            actions.push(format!("abort incomplete multipart uploads after {days} d"));
        }
        if let Some(days) = self.expire_days {
            actions.push(format!("expire objects after {days} d"));
        }
        for (days, class) in &self.transitions {
            match days {
                Some(days) => actions.push(format!("move to {class} after {days} d")),
                None => actions.push(format!("move to {class}")),
            }
        }
        if self.other_actions {
            actions.push("other actions".to_owned());
        }
        let prefix = if self.prefix.is_empty() {
            "the whole bucket".to_owned()
        } else {
            format!("prefix {}", self.prefix)
        };
        let tagged = if self.tags.is_empty() {
            String::new()
        } else {
            format!(" tagged {}", self.tags.join(" and "))
        };
        let status = if self.enabled { "" } else { " (disabled)" };
        format!(
            "{} on {prefix}{tagged}: {}{status}",
            self.id,
            actions.join(", ")
        )
    }

    /// Whether `self` (someone else's) does one of `ours`'s jobs on an overlapping prefix.
    fn overlaps(&self, ours: &Self) -> bool {
        let prefixes =
            self.prefix.starts_with(&ours.prefix) || ours.prefix.starts_with(&self.prefix);
        let same_job = (self.abort_days.is_some() && ours.abort_days.is_some())
            || (self.expire_days.is_some() && ours.expire_days.is_some())
            || (!self.transitions.is_empty() && !ours.transitions.is_empty());
        self.enabled && prefixes && same_job
    }
}

/// The bucket's configuration as read, in words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BucketState {
    /// Default encryption: (`AES256` or `aws:kms`, the KMS key); `None`: none configured.
    pub encryption: Option<(String, Option<String>)>,
    /// Whether all four public access blocks are on; `None`: no configuration.
    pub public_access_blocked: Option<bool>,
    /// The lifecycle rules, one line each.
    pub lifecycle: Vec<String>,
    /// The CORS rules, one line each.
    pub cors: Vec<String>,
    /// `Enabled`, `Suspended`, or `None` (never enabled).
    pub versioning: Option<String>,
    /// The replication role and rules, one line each.
    pub replication: Vec<String>,
}

/// What `bucket init` would change, computed from the bucket's state; applied by
/// [`S3Store::apply_bucket_plan`].
#[derive(Debug, Clone)]
pub struct BucketPlan {
    /// The changes, one line each; empty: the bucket is already set up.
    pub changes: Vec<String>,
    /// Rules or settings of someone else's that the plan would replace: refused unless forced.
    pub conflicts: Vec<String>,
    encryption: Option<ServerSideEncryptionConfiguration>,
    public_access_block: Option<PublicAccessBlockConfiguration>,
    lifecycle: Option<Vec<LifecycleRule>>,
    cors: Option<Vec<CorsRule>>,
}

fn build_error(what: &str, error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::other(format!("building the {what}"), error)
}

/// `Ok(None)` for the error codes S3 answers when a configuration is absent.
macro_rules! absent_as_none {
    ($call:expr, $bucket:expr, $($code:literal)|+) => {
        match $call.await {
            Ok(output) => Ok(Some(output)),
            Err(error) if matches!(error.code(), $(Some($code))|+) => Ok(None),
            Err(error) => Err(map_error(error, $bucket)),
        }
    };
}

impl S3Store {
    async fn lifecycle_rules(&self) -> Result<Vec<LifecycleRule>> {
        let output = absent_as_none!(
            self.client
                .get_bucket_lifecycle_configuration()
                .bucket(&self.bucket)
                .send(),
            &self.bucket,
            "NoSuchLifecycleConfiguration"
        )?;
        Ok(output.map(|o| o.rules().to_vec()).unwrap_or_default())
    }

    async fn cors_rules(&self) -> Result<Vec<CorsRule>> {
        let output = absent_as_none!(
            self.client.get_bucket_cors().bucket(&self.bucket).send(),
            &self.bucket,
            "NoSuchCORSConfiguration"
        )?;
        Ok(output.map(|o| o.cors_rules().to_vec()).unwrap_or_default())
    }

    async fn default_encryption(&self) -> Result<Option<(String, Option<String>)>> {
        let output = absent_as_none!(
            self.client
                .get_bucket_encryption()
                .bucket(&self.bucket)
                .send(),
            &self.bucket,
            "ServerSideEncryptionConfigurationNotFoundError"
        )?;
        Ok(output.and_then(|o| {
            let rule = o.server_side_encryption_configuration()?.rules().first()?;
            let default = rule.apply_server_side_encryption_by_default()?;
            Some((
                default.sse_algorithm().as_str().to_owned(),
                default.kms_master_key_id().map(str::to_owned),
            ))
        }))
    }

    async fn public_access_blocked(&self) -> Result<Option<bool>> {
        let output = absent_as_none!(
            self.client
                .get_public_access_block()
                .bucket(&self.bucket)
                .send(),
            &self.bucket,
            "NoSuchPublicAccessBlockConfiguration"
        )?;
        Ok(output.and_then(|o| {
            let c = o.public_access_block_configuration()?;
            Some(
                [
                    c.block_public_acls(),
                    c.ignore_public_acls(),
                    c.block_public_policy(),
                    c.restrict_public_buckets(),
                ]
                .iter()
                .all(|flag| *flag == Some(true)),
            )
        }))
    }

    /// `bucket`'s versioning status (`Enabled`, `Suspended`), `None` when never enabled.
    pub async fn bucket_versioning(&self, bucket: &str) -> Result<Option<String>> {
        self.versioning(bucket).await
    }

    async fn versioning(&self, bucket: &str) -> Result<Option<String>> {
        match self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(output) => Ok(output.status().map(|s| s.as_str().to_owned())),
            // moto names the answer's root `GetBucketVersioningResponse`, which the SDK cannot
            // decode (S3 sends `VersioningConfiguration`): read its status from the body.
            Err(error)
                if error.code().is_none()
                    && error
                        .raw_response()
                        .is_some_and(|r| r.status().as_u16() == 200) =>
            {
                let body = error
                    .raw_response()
                    .and_then(|r| r.body().bytes())
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Ok(["Enabled", "Suspended"]
                    .into_iter()
                    .find(|status| body.contains(&format!("<Status>{status}</Status>")))
                    .map(str::to_owned))
            }
            Err(error) => Err(map_error(error, bucket)),
        }
    }

    async fn replication(&self) -> Result<Option<ReplicationConfiguration>> {
        let output = absent_as_none!(
            self.client
                .get_bucket_replication()
                .bucket(&self.bucket)
                .send(),
            &self.bucket,
            "ReplicationConfigurationNotFoundError"
        )?;
        Ok(output.and_then(|o| o.replication_configuration().cloned()))
    }

    /// The bucket's configuration as S3 reports it.
    pub async fn bucket_state(&self) -> Result<BucketState> {
        let replication = self.replication().await?;
        let mut replication_lines = Vec::new();
        if let Some(config) = &replication {
            replication_lines.push(format!("role {}", config.role()));
            for rule in config.rules() {
                #[allow(deprecated, reason = "old rules carry their prefix outside the filter")]
                let prefix = rule
                    .filter()
                    .and_then(|f| f.prefix())
                    .or(rule.prefix())
                    .unwrap_or_default();
                let destination = rule.destination().map(|d| d.bucket()).unwrap_or_default();
                replication_lines.push(format!(
                    "{} on prefix {prefix:?} to {destination} ({})",
                    rule.id().unwrap_or_default(),
                    rule.status().as_str()
                ));
            }
        }
        Ok(BucketState {
            encryption: self.default_encryption().await?,
            public_access_blocked: self.public_access_blocked().await?,
            lifecycle: self
                .lifecycle_rules()
                .await?
                .iter()
                .map(|r| RuleShape::of(r).describe())
                .collect(),
            cors: self
                .cors_rules()
                .await?
                .iter()
                .map(|r| {
                    format!(
                        "{}: {} from {} exposing {}",
                        r.id().unwrap_or("(no id)"),
                        r.allowed_methods().join(", "),
                        r.allowed_origins().join(", "),
                        r.expose_headers().join(", ")
                    )
                })
                .collect(),
            versioning: self.versioning(&self.bucket).await?,
            replication: replication_lines,
        })
    }

    /// What `bucket init` would change to give the bucket `setup`.
    pub async fn plan_bucket(&self, setup: &BucketSetup) -> Result<BucketPlan> {
        let mut plan = BucketPlan {
            changes: Vec::new(),
            conflicts: Vec::new(),
            encryption: None,
            public_access_block: None,
            lifecycle: None,
            cors: None,
        };
        self.plan_encryption(setup, &mut plan).await?;
        if self.public_access_blocked().await? != Some(true) {
            plan.changes
                .push("block all public access (ACLs and bucket policies)".to_owned());
            plan.public_access_block = Some(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            );
        }
        self.plan_lifecycle(setup, &mut plan).await?;
        self.plan_cors(setup, &mut plan).await?;
        Ok(plan)
    }

    async fn plan_encryption(&self, setup: &BucketSetup, plan: &mut BucketPlan) -> Result<()> {
        let wanted = match &setup.encryption {
            ServerSideEncryption::Aes256 => ("AES256".to_owned(), None),
            ServerSideEncryption::Kms { key_id } => ("aws:kms".to_owned(), key_id.clone()),
            _ => return Ok(()),
        };
        let current = self.default_encryption().await?;
        if current.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let describe = |(algorithm, key): &(String, Option<String>)| match key {
            Some(key) => format!("{algorithm} with key {key}"),
            None => algorithm.clone(),
        };
        match &current {
            None => plan
                .changes
                .push(format!("default encryption: {}", describe(&wanted))),
            // SSE-S3 is every new bucket's default on AWS: moving up to SSE-KMS is no conflict.
            Some((algorithm, _)) if algorithm == "AES256" => plan.changes.push(format!(
                "default encryption: AES256 to {}",
                describe(&wanted)
            )),
            Some(other) => {
                let line = format!(
                    "default encryption: {} to {}",
                    describe(other),
                    describe(&wanted)
                );
                plan.conflicts.push(format!(
                    "the bucket's default encryption is {}, not set by plugs-media",
                    describe(other)
                ));
                plan.changes.push(line);
            }
        }
        let mut default = ServerSideEncryptionByDefault::builder().sse_algorithm(
            aws_sdk_s3::types::ServerSideEncryption::from(wanted.0.as_str()),
        );
        if let Some(key) = &wanted.1 {
            default = default.kms_master_key_id(key);
        }
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                default
                    .build()
                    .map_err(|e| build_error("encryption rule", e))?,
            )
            .bucket_key_enabled(wanted.0 == "aws:kms")
            .build();
        plan.encryption = Some(
            ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(|e| build_error("encryption configuration", e))?,
        );
        Ok(())
    }

    async fn plan_lifecycle(&self, setup: &BucketSetup, plan: &mut BucketPlan) -> Result<()> {
        let abort = LifecycleRule::builder()
            .id(ABORT_RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(setup.abort_multipart_days)
                    .build(),
            )
            .build()
            .map_err(|e| build_error("lifecycle rule", e))?;
        let staging = LifecycleRule::builder()
            .id(STAGING_RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(
                LifecycleRuleFilter::builder()
                    .prefix(&setup.staging_prefix)
                    .build(),
            )
            .expiration(
                LifecycleExpiration::builder()
                    .days(setup.staging_expire_days)
                    .build(),
            )
            .build()
            .map_err(|e| build_error("lifecycle rule", e))?;
        let mut wanted = vec![abort, staging];
        if let Some(archive) = &setup.archive {
            archive
                .validate()
                .map_err(|why| StoreError::other("the archive rule", why))?;
            let (key, value) = ORIGINAL_TAG;
            let filter = LifecycleRuleAndOperator::builder()
                .prefix(&archive.prefix)
                .tags(
                    Tag::builder()
                        .key(key)
                        .value(value)
                        .build()
                        .map_err(|e| build_error("lifecycle tag", e))?,
                )
                .build();
            wanted.push(
                LifecycleRule::builder()
                    .id(ARCHIVE_RULE_ID)
                    .status(ExpirationStatus::Enabled)
                    .filter(LifecycleRuleFilter::builder().and(filter).build())
                    .transitions(
                        Transition::builder()
                            .days(archive.after_days)
                            .storage_class(TransitionStorageClass::from(
                                archive.storage_class.as_str(),
                            ))
                            .build(),
                    )
                    .build()
                    .map_err(|e| build_error("lifecycle rule", e))?,
            );
        }
        let current = self.lifecycle_rules().await?;
        let mut merged = Vec::new();
        let mut changed = false;
        for rule in &current {
            let shape = RuleShape::of(rule);
            if shape.id.starts_with(RULE_PREFIX) {
                if !wanted.iter().any(|w| w.id() == rule.id()) {
                    plan.changes.push(format!(
                        "lifecycle: remove our old rule {}",
                        shape.describe()
                    ));
                    changed = true;
                }
                continue;
            }
            let conflict = wanted
                .iter()
                .map(RuleShape::of)
                .find(|ours| shape.overlaps(ours));
            match conflict {
                Some(ours) => {
                    plan.conflicts.push(format!(
                        "lifecycle rule {} (not ours) does what {} does: {}",
                        if shape.id.is_empty() {
                            "(no id)"
                        } else {
                            &shape.id
                        },
                        ours.id,
                        shape.describe()
                    ));
                    plan.changes.push(format!(
                        "lifecycle: replace someone else's rule {}",
                        shape.describe()
                    ));
                    changed = true;
                }
                None => merged.push(rule.clone()),
            }
        }
        for rule in wanted {
            let shape = RuleShape::of(&rule);
            match current.iter().find(|c| c.id() == rule.id()) {
                Some(existing) if RuleShape::of(existing) == shape => {}
                Some(existing) => {
                    plan.changes.push(format!(
                        "lifecycle: update {} (was {})",
                        shape.describe(),
                        RuleShape::of(existing).describe()
                    ));
                    changed = true;
                }
                None => {
                    plan.changes
                        .push(format!("lifecycle: add {}", shape.describe()));
                    changed = true;
                }
            }
            merged.push(rule);
        }
        if changed {
            plan.lifecycle = Some(merged);
        }
        Ok(())
    }

    async fn plan_cors(&self, setup: &BucketSetup, plan: &mut BucketPlan) -> Result<()> {
        let current = self.cors_rules().await?;
        let ours = if setup.cors_origins.is_empty() {
            None
        } else {
            let mut rule = CorsRule::builder()
                .id(CORS_RULE_ID)
                .allowed_headers("*")
                .expose_headers("ETag")
                .max_age_seconds(3600);
            for method in ["GET", "HEAD", "PUT"] {
                rule = rule.allowed_methods(method);
            }
            for origin in &setup.cors_origins {
                rule = rule.allowed_origins(origin);
            }
            Some(rule.build().map_err(|e| build_error("CORS rule", e))?)
        };
        let existing = current.iter().find(|r| r.id() == Some(CORS_RULE_ID));
        let same = match (existing, &ours) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let mut origins_a = a.allowed_origins().to_vec();
                let mut origins_b = b.allowed_origins().to_vec();
                origins_a.sort();
                origins_b.sort();
                origins_a == origins_b
                    && a.expose_headers()
                        .iter()
                        .any(|h| h.eq_ignore_ascii_case("etag"))
                    && a.allowed_methods().len() == b.allowed_methods().len()
            }
            _ => false,
        };
        if same {
            return Ok(());
        }
        plan.changes.push(match &ours {
            Some(rule) => format!(
                "CORS: {CORS_RULE_ID} allows GET, HEAD, PUT from {} exposing ETag",
                rule.allowed_origins().join(", ")
            ),
            None => format!("CORS: remove {CORS_RULE_ID} (CORS_ALLOWED_ORIGINS is empty)"),
        });
        let mut merged: Vec<CorsRule> = current
            .into_iter()
            .filter(|r| r.id() != Some(CORS_RULE_ID))
            .collect();
        merged.extend(ours);
        plan.cors = Some(merged);
        Ok(())
    }

    /// Applies `plan`; refuses when it has conflicts and `force` is false. Returns the lines of
    /// what changed (the plan's).
    pub async fn apply_bucket_plan(&self, plan: &BucketPlan, force: bool) -> Result<Vec<String>> {
        if !plan.conflicts.is_empty() && !force {
            return Err(StoreError::PreconditionFailed {
                key: format!(
                    "{}: {} (pass --force to replace)",
                    self.bucket,
                    plan.conflicts.join("; ")
                ),
            });
        }
        let bucket = self.bucket.as_str();
        if let Some(config) = &plan.encryption {
            self.client
                .put_bucket_encryption()
                .bucket(bucket)
                .server_side_encryption_configuration(config.clone())
                .send()
                .await
                .map_err(|e| map_error(e, bucket))?;
        }
        if let Some(config) = &plan.public_access_block {
            self.client
                .put_public_access_block()
                .bucket(bucket)
                .public_access_block_configuration(config.clone())
                .send()
                .await
                .map_err(|e| map_error(e, bucket))?;
        }
        if let Some(rules) = &plan.lifecycle {
            self.client
                .put_bucket_lifecycle_configuration()
                .bucket(bucket)
                .lifecycle_configuration(
                    BucketLifecycleConfiguration::builder()
                        .set_rules(Some(rules.clone()))
                        .build()
                        .map_err(|e| build_error("lifecycle configuration", e))?,
                )
                .send()
                .await
                .map_err(|e| map_error(e, bucket))?;
        }
        match &plan.cors {
            Some(rules) if rules.is_empty() => {
                self.client
                    .delete_bucket_cors()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| map_error(e, bucket))?;
            }
            Some(rules) => {
                self.client
                    .put_bucket_cors()
                    .bucket(bucket)
                    .cors_configuration(
                        CorsConfiguration::builder()
                            .set_cors_rules(Some(rules.clone()))
                            .build()
                            .map_err(|e| build_error("CORS configuration", e))?,
                    )
                    .send()
                    .await
                    .map_err(|e| map_error(e, bucket))?;
            }
            None => {}
        }
        Ok(plan.changes.clone())
    }

    /// Turns versioning on for this bucket and `destination`, and writes our replication rule
    /// for `prefix` to `destination` with `role` (keeping other rules). With `replica_kms_key`,
    /// SSE-KMS objects are replicated and encrypted with that key in the destination. Refuses
    /// to replace a configuration with another role unless `force`. Returns what changed.
    pub async fn replicate_to(
        &self,
        destination: &str,
        role: &str,
        prefix: &str,
        replica_kms_key: Option<&str>,
        force: bool,
    ) -> Result<Vec<String>> {
        let mut changes = Vec::new();
        for bucket in [self.bucket.as_str(), destination] {
            if self.versioning(bucket).await?.as_deref() != Some("Enabled") {
                self.client
                    .put_bucket_versioning()
                    .bucket(bucket)
                    .versioning_configuration(
                        VersioningConfiguration::builder()
                            .status(BucketVersioningStatus::Enabled)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| map_error(e, bucket))?;
                changes.push(format!("versioning enabled on {bucket}"));
            }
        }
        let current = self.replication().await?;
        if let Some(config) = &current
            && config.role() != role
            && !force
        {
            return Err(StoreError::PreconditionFailed {
                key: format!(
                    "{}: replication already uses role {} (pass --force to replace it with {role})",
                    self.bucket,
                    config.role()
                ),
            });
        }
        let destination_arn = if destination.starts_with("arn:") {
            destination.to_owned()
        } else {
            format!("arn:aws:s3:::{destination}")
        };
        let mut target = Destination::builder().bucket(&destination_arn);
        if let Some(key) = replica_kms_key {
            target = target.encryption_configuration(
                EncryptionConfiguration::builder()
                    .replica_kms_key_id(key)
                    .build(),
            );
        }
        let mut rule = ReplicationRule::builder()
            .id(REPLICATION_RULE_ID)
            .priority(1)
            .status(ReplicationRuleStatus::Enabled)
            .filter(ReplicationRuleFilter::builder().prefix(prefix).build())
            .delete_marker_replication(
                DeleteMarkerReplication::builder()
                    .status(DeleteMarkerReplicationStatus::Disabled)
                    .build(),
            )
            .destination(target.build().map_err(|e| build_error("destination", e))?);
        if replica_kms_key.is_some() {
            rule = rule.source_selection_criteria(
                SourceSelectionCriteria::builder()
                    .sse_kms_encrypted_objects(
                        SseKmsEncryptedObjects::builder()
                            .status(SseKmsEncryptedObjectsStatus::Enabled)
                            .build()
                            .map_err(|e| build_error("replication rule", e))?,
                    )
                    .build(),
            );
        }
        let rule = rule
            .build()
            .map_err(|e| build_error("replication rule", e))?;
        let mut rules: Vec<ReplicationRule> = current
            .as_ref()
            .map(|c| {
                c.rules()
                    .iter()
                    .filter(|r| r.id() != Some(REPLICATION_RULE_ID))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let existing = current.as_ref().and_then(|c| {
            c.rules()
                .iter()
                .find(|r| r.id() == Some(REPLICATION_RULE_ID))
        });
        let same_role = current.as_ref().is_some_and(|c| c.role() == role);
        // Compared on what every server keeps (moto drops the filter's prefix and the source
        // selection on read-back): destination, replica key, status, and a prefix if shown.
        let same_rule = existing.is_some_and(|e| {
            let shown_prefix = e.filter().and_then(|f| f.prefix()).unwrap_or_default();
            e.destination().map(|d| d.bucket()) == rule.destination().map(|d| d.bucket())
                && e.destination()
                    .and_then(|d| d.encryption_configuration())
                    .and_then(|c| c.replica_kms_key_id())
                    == replica_kms_key
                && e.status() == rule.status()
                && (shown_prefix.is_empty() || shown_prefix == prefix)
        });
        if same_rule && same_role {
            return Ok(changes);
        }
        rules.push(rule);
        self.client
            .put_bucket_replication()
            .bucket(&self.bucket)
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .role(role)
                    .set_rules(Some(rules))
                    .build()
                    .map_err(|e| build_error("replication configuration", e))?,
            )
            .send()
            .await
            .map_err(|e| map_error(e, &self.bucket))?;
        changes.push(format!(
            "replication: {REPLICATION_RULE_ID} copies {prefix} to {destination_arn} with role {role}{}",
            replica_kms_key.map_or_else(String::new, |k| format!(", replicas encrypted with {k}"))
        ));
        Ok(changes)
    }
}
