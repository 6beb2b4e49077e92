//! Google Compute Engine's metadata server. Every request carries `Metadata-Flavor: Google`
//! and every answer must carry it back: an answer without it is not from the metadata
//! server (a proxy, a captive portal) and is refused.

use reqwest::Method;

use super::http::{Answer, Endpoint, FetchError};
use super::{facts, Found, USER_DATA_CAP, VALUE_CAP};
use crate::machine::found::Facts;

const FLAVOR_HEADER: &str = "metadata-flavor";
const FLAVOR: &str = "Google";
/// Our own attribute wins over the generic one, which cloud-init images also read.
const USER_DATA_ATTRIBUTES: [&str; 2] = [
    "instance/attributes/nomados-config",
    "instance/attributes/user-data",
];

async fn get(endpoint: &Endpoint, path: &str, cap: usize) -> Result<Option<Answer>, FetchError> {
    let answer = endpoint
        .request(Method::GET, path, cap)
        .header(FLAVOR_HEADER, FLAVOR)
        .send()
        .await?;
    if let Some(answer) = &answer {
        let flavor = answer.headers.get(FLAVOR_HEADER);
        if flavor.is_none_or(|v| v != FLAVOR) {
            return Err(answer.invalid(
                "answer lacks the Metadata-Flavor: Google header, so it is not from the metadata server",
            ));
        }
    }
    Ok(answer)
}

async fn value(endpoint: &Endpoint, path: &str) -> Result<Option<String>, FetchError> {
    match get(endpoint, path, VALUE_CAP).await? {
        Some(answer) => Ok(Some(answer.text()?.to_string())),
        None => Ok(None),
    }
}

/// `us-central1-a` -> `us-central1`.
fn region_of(zone: &str) -> Option<&str> {
    zone.rsplit_once('-').map(|(region, _)| region)
}

pub async fn fetch(endpoint: &Endpoint) -> Result<Found, FetchError> {
    let mut user_data = None;
    for path in USER_DATA_ATTRIBUTES {
        if let Some(answer) = get(endpoint, path, USER_DATA_CAP).await? {
            user_data = Some(answer.body).filter(|data| !data.is_empty());
            break;
        }
    }
    let instance_id = value(endpoint, "instance/id").await?;
    let hostname = value(endpoint, "instance/hostname").await?;
    // Both are resource paths: projects/123/zones/us-central1-a, .../machineTypes/e2-medium.
    let zone = value(endpoint, "instance/zone").await?;
    let zone = zone
        .as_deref()
        .map(facts::last_segment)
        .and_then(facts::fact);
    let machine_type = value(endpoint, "instance/machine-type").await?;
    Ok(Found {
        source: "gce",
        user_data,
        facts: Facts {
            instance_id: instance_id.as_deref().and_then(facts::fact),
            hostname: hostname.as_deref().and_then(facts::hostname),
            region: zone.as_deref().and_then(region_of).and_then(facts::fact),
            zone,
            instance_type: machine_type
                .as_deref()
                .map(facts::last_segment)
                .and_then(facts::fact),
        },
    })
}
