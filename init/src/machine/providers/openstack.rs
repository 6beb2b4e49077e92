//! OpenStack's metadata service (Nova): `meta_data.json` for the facts and `user_data` as
//! given at launch. The OpenStack API has no region or flavor in its metadata document.

use reqwest::Method;
use serde::Deserialize;

use super::http::{Endpoint, FetchError};
use super::{facts, Found, DOCUMENT_CAP, USER_DATA_CAP};
use crate::machine::found::Facts;

#[derive(Debug, Deserialize)]
struct MetaData {
    uuid: Option<String>,
    hostname: Option<String>,
    name: Option<String>,
    availability_zone: Option<String>,
}

pub async fn fetch(endpoint: &Endpoint) -> Result<Found, FetchError> {
    let answer = endpoint
        .request(Method::GET, "openstack/latest/meta_data.json", DOCUMENT_CAP)
        .send_required()
        .await?;
    let meta: MetaData = answer.json()?;
    let user_data = endpoint
        .request(Method::GET, "openstack/latest/user_data", USER_DATA_CAP)
        .send()
        .await?
        .map(|answer| answer.body)
        .filter(|data| !data.is_empty());
    let hostname = meta
        .hostname
        .as_deref()
        .and_then(facts::hostname)
        .or_else(|| meta.name.as_deref().and_then(facts::hostname));
    Ok(Found {
        source: "openstack",
        user_data,
        facts: Facts {
            instance_id: meta.uuid.as_deref().and_then(facts::fact),
            hostname,
            region: None,
            zone: meta.availability_zone.as_deref().and_then(facts::fact),
            instance_type: None,
        },
    })
}
