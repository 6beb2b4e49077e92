//! (placeholder until origins land)
use std::path::PathBuf;
use std::time::Duration;

use super::model::{Origin, PackDecl};

pub struct FetchOptions {
    pub cache_dir: PathBuf,
    pub max_unpacked_bytes: u64,
    pub max_entries: usize,
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            cache_dir: "/var/lib/nomados/packs-cache".into(),
            max_unpacked_bytes: 256 << 20,
            max_entries: 10_000,
            timeout: Duration::from_secs(60),
        }
    }
}

pub struct FetchedPack {
    pub dir: PathBuf,
    pub digest: Option<String>,
    pub from_cache: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OriginError(String);

pub struct Fetcher;

impl Fetcher {
    pub fn new(_opts: FetchOptions) -> Result<Self, OriginError> {
        Ok(Self)
    }
    pub async fn fetch(&self, decl: &PackDecl) -> Result<FetchedPack, OriginError> {
        match &decl.origin {
            Origin::Local(p) => Ok(FetchedPack {
                dir: p.join(&decl.origin_name),
                digest: None,
                from_cache: false,
            }),
            Origin::Http(u) => Err(OriginError(u.clone())),
        }
    }
}
