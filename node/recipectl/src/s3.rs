//! Backups in an S3-compatible bucket: `s3://BUCKET/KEY` locations for
//! `snapshot save --into` and `snapshot restore-member`. Requests are
//! signed (AWS Signature V4) with the credentials of the standard
//! `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` variables and sent,
//! path-style, to `--s3-endpoint`. An object is written with one PUT, so a
//! backup may be at most 5 GiB, S3's limit for a single PUT.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use tokio_util::io::ReaderStream;

/// How long a signed request stays valid: enough for a slow upload to start.
const SIGNED_FOR: Duration = Duration::from_secs(3600);

/// A parsed `s3://BUCKET/KEY` (the key may be a prefix, or empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    pub key: String,
}

impl Location {
    /// `Some` for an `s3://` location, `None` for a local path.
    pub fn parse(text: &str) -> Option<anyhow::Result<Self>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        Some(if bucket.is_empty() {
            Err(anyhow::anyhow!(
                "{text:?} names no bucket: write s3://BUCKET/KEY"
            ))
        } else {
            Ok(Self {
                bucket: bucket.to_owned(),
                key: key.trim_end_matches('/').to_owned(),
            })
        })
    }

    /// The key of `name` under this location's key, as under a directory.
    pub fn child(&self, name: &str) -> String {
        if self.key.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.key)
        }
    }
}

/// Where S3 requests go, and as whom.
#[derive(Clone, Debug, clap::Args)]
pub struct S3Options {
    /// The S3-compatible server for s3:// locations, such as
    /// https://s3.eu-west-1.amazonaws.com or http://minio:9000.
    #[arg(long, env = "RECIPESTORE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The bucket's region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
}

/// A bucket with the credentials to use it.
pub struct Store {
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

impl Store {
    pub fn new(options: &S3Options, bucket: &str) -> anyhow::Result<Self> {
        let endpoint = options.s3_endpoint.as_deref().ok_or_else(|| {
            anyhow::anyhow!("an s3:// location needs --s3-endpoint (or RECIPESTORE_S3_ENDPOINT)")
        })?;
        let url = endpoint
            .parse()
            .with_context(|| format!("--s3-endpoint {endpoint:?} is not a URL"))?;
        let bucket = Bucket::new(
            url,
            UrlStyle::Path,
            bucket.to_owned(),
            options.s3_region.clone(),
        )
        .with_context(|| format!("--s3-endpoint {endpoint:?} is not an http(s) URL"))?;
        let credentials = Credentials::from_env().ok_or_else(|| {
            anyhow::anyhow!(
                "an s3:// location needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
            )
        })?;
        Ok(Self {
            bucket,
            credentials,
            http: reqwest::Client::new(),
        })
    }

    /// Uploads the file at `path` as `key`.
    pub async fn upload(&self, path: &Path, key: &str) -> anyhow::Result<()> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        let len = file.metadata().await?.len();
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let request = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(ReaderStream::new(file)));
        self.send(request, "upload", key).await.map(drop)
    }

    /// Downloads `key` into a new file at `path`, synced.
    pub async fn download(&self, key: &str, path: &Path) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let mut response = self.send(self.http.get(url), "download", key).await?;
        let mut out = tokio::fs::File::create(path)
            .await
            .with_context(|| format!("cannot create {}", path.display()))?;
        while let Some(chunk) = response.chunk().await? {
            out.write_all(&chunk).await?;
        }
        out.sync_all().await?;
        Ok(())
    }

    /// Every key under `prefix`.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action: ListObjectsV2<'_> =
                self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(token) = &token {
                action.with_continuation_token(token.clone());
            }
            let request = self.http.get(action.sign(SIGNED_FOR));
            let body = self.send(request, "list", prefix).await?.text().await?;
            let page = ListObjectsV2::parse_response(&body)
                .with_context(|| format!("the listing of {} is not S3's", self.describe(prefix)))?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(keys),
            }
        }
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.send(self.http.delete(url), "delete", key)
            .await
            .map(drop)
    }

    fn describe(&self, key: &str) -> String {
        format!(
            "s3://{}/{key} at {}",
            self.bucket.name(),
            self.bucket.base_url()
        )
    }

    /// Sends `request` (to `what` `key`), answering the response when it
    /// succeeded, otherwise an error with S3's own words.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        key: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot {what} {}", self.describe(key)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!(
            "{what} of {} failed: {status}: {}",
            self.describe(key),
            body.trim()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_bucket_and_key() {
        assert!(Location::parse("/backups").is_none());
        let at = Location::parse("s3://kitchen/cookbook/").unwrap().unwrap();
        assert_eq!(at.bucket, "kitchen");
        assert_eq!(at.child("backup-1.rsback"), "cookbook/backup-1.rsback");
        let root = Location::parse("s3://kitchen").unwrap().unwrap();
        assert_eq!(root.child("b"), "b");
        assert!(Location::parse("s3:///key").unwrap().is_err());
    }
}
