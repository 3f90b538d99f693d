//! What only S3 has, for the operator's commands (`plugs-api check`): where the credentials came
//! from, and a probe object written with a given encryption whose encryption S3 reports back.
//! Inherent methods of [`S3Store`], not the [`ObjectStore`](crate::ObjectStore) trait: the other
//! stores have no such thing and need not pretend.

use std::time::SystemTime;

use aws_sdk_s3::config::ProvideCredentials as _;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::Bytes;

use super::{S3Store, map_error};
use crate::{ObjectKey, Result, ServerSideEncryption, StoreError};

/// The provider name `S3Store::new` gives the static keys of its configuration.
pub(super) const STATIC_PROVIDER_NAME: &str = "plugs-static";

/// Where the credentials the client signs with came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CredentialSource {
    /// In words, like "environment variables (AWS_ACCESS_KEY_ID)" or "EC2 instance role (IMDS)".
    pub description: String,
    /// The provider's own name, as aws-config reports it (`EnvironmentVariable`, `ProfileFile`,
    /// `WebIdentityToken`, `IMDSv2`, ...).
    pub provider_name: String,
    /// When temporary credentials expire; `None` for long-lived keys.
    pub expires_at: Option<SystemTime>,
}

/// What S3 said about a probe object after writing it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeEncryption {
    /// `x-amz-server-side-encryption` as reported on `HeadObject` (`AES256`, `aws:kms`, ...);
    /// `None` when the server reports nothing (some S3-compatible servers never do).
    pub algorithm: Option<String>,
    /// The KMS key S3 used, for `aws:kms`.
    pub kms_key_id: Option<String>,
}

/// Turns aws-config's provider name into words an operator recognises. The names are the ones
/// its default chain and providers give their credentials; an unknown one is shown as it is.
fn describe_provider(name: &str) -> String {
    let known = [
        (
            STATIC_PROVIDER_NAME,
            "static keys from the settings (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
        ),
        (
            "Environment",
            "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
        ),
        (
            "WebIdentity",
            "web identity token (AWS_WEB_IDENTITY_TOKEN_FILE, e.g. EKS IRSA)",
        ),
        ("Profile", "shared profile (AWS_PROFILE, ~/.aws/config)"),
        ("SSO", "IAM Identity Center (SSO) profile"),
        ("CredentialProcess", "credential_process of the profile"),
        ("IMDS", "EC2 instance role (IMDS)"),
        (
            "Ecs",
            "container role (ECS/EKS Pod Identity credentials endpoint)",
        ),
        ("Http", "container role (credentials endpoint)"),
        ("AssumeRole", "assumed IAM role (STS)"),
    ];
    known
        .iter()
        .find(|(fragment, _)| name.contains(fragment))
        .map_or_else(
            || format!("provider {name:?}"),
            |(_, words)| (*words).to_owned(),
        )
}

/// The `provider_name` field of the credentials' `Debug` output: aws-credential-types keeps the
/// name private, and its `Debug` is the one place that shows it (the secret itself is redacted
/// there).
fn provider_name_of(debug: &str) -> Option<String> {
    let start = debug.find("provider_name: \"")? + "provider_name: \"".len();
    let rest = &debug[start..];
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}

impl S3Store {
    /// Resolves credentials through aws-config's default chain (what the store signs with when
    /// it was given no static keys, `S3Config::use_iam_role`), and says which provider of the
    /// chain answered. Fails like a request would when none has any.
    pub async fn default_chain_credentials(region: &str) -> Result<CredentialSource> {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(region.to_owned()))
            .load()
            .await;
        let provider = shared
            .credentials_provider()
            .ok_or_else(|| StoreError::other("no credentials", "the chain has no provider"))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|source| StoreError::other("credentials did not resolve", source))?;
        let provider_name = provider_name_of(&format!("{credentials:?}")).unwrap_or_default();
        Ok(CredentialSource {
            description: describe_provider(&provider_name),
            provider_name,
            expires_at: credentials.expiry(),
        })
    }

    /// Writes `body` under `key` asking for `encryption`, and returns the encryption S3 reports
    /// on a `HeadObject` of it (the write's answer is not trusted alone: the bucket's default
    /// may apply where the request asked for none).
    pub async fn put_probe(
        &self,
        key: &ObjectKey,
        body: Bytes,
        encryption: &ServerSideEncryption,
    ) -> Result<ProbeEncryption> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type("text/plain")
            .body(SdkByteStream::from(body));
        request = super::apply_sse!(request, encryption);
        request
            .send()
            .await
            .map_err(|error| map_error(error, key.as_str()))?;
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|error| map_error(error, key.as_str()))?;
        Ok(ProbeEncryption {
            algorithm: head
                .server_side_encryption()
                .map(|sse| sse.as_str().to_owned()),
            kms_key_id: head.ssekms_key_id().map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_read_from_debug_output_and_described() {
        let credentials = aws_sdk_s3::config::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            STATIC_PROVIDER_NAME,
        );
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("secret\""), "{debug}");
        assert_eq!(
            provider_name_of(&debug).as_deref(),
            Some(STATIC_PROVIDER_NAME)
        );
        assert!(describe_provider("EnvironmentVariable").starts_with("environment"));
        assert!(describe_provider("WebIdentityToken").starts_with("web identity"));
        assert!(describe_provider("ProfileFile").starts_with("shared profile"));
        assert!(describe_provider("IMDSv2").starts_with("EC2 instance role"));
        assert_eq!(describe_provider("Mystery"), "provider \"Mystery\"");
    }
}
