//! Azure's Instance Metadata Service: one instance document (`Metadata: true`) holds the
//! facts and, since api-version 2021-01-01, the user data (base64). The wireserver's ready
//! report is its own step ([`super::wireserver`]).

use base64::Engine;
use reqwest::Method;
use serde::Deserialize;

use super::http::{Endpoint, FetchError, Problem};
use super::{facts, Found, DOCUMENT_CAP, USER_DATA_CAP};
use crate::machine::found::Facts;

const INSTANCE_PATH: &str = "metadata/instance?api-version=2021-02-01";
/// The document carries the user data base64-encoded (4 bytes per 3) besides the facts.
const INSTANCE_CAP: usize = DOCUMENT_CAP + USER_DATA_CAP.div_ceil(3) * 4;

#[derive(Debug, Deserialize)]
struct Instance {
    compute: Compute,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Compute {
    name: Option<String>,
    location: Option<String>,
    zone: Option<String>,
    vm_size: Option<String>,
    vm_id: Option<String>,
    user_data: Option<String>,
}

pub async fn fetch(endpoint: &Endpoint) -> Result<Found, FetchError> {
    let answer = endpoint
        .request(Method::GET, INSTANCE_PATH, INSTANCE_CAP)
        .header("metadata", "true")
        .send_required()
        .await?;
    let instance: Instance = answer.json()?;
    let compute = instance.compute;
    let user_data = match compute.user_data.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(encoded) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| answer.invalid("compute.userData is not base64"))?;
            if data.len() > USER_DATA_CAP {
                return Err(FetchError {
                    problem: Problem::TooLarge { cap: USER_DATA_CAP },
                    ..answer.invalid("")
                });
            }
            Some(data)
        }
    };
    Ok(Found {
        source: "azure",
        user_data,
        facts: Facts {
            instance_id: compute.vm_id.as_deref().and_then(facts::fact),
            hostname: compute.name.as_deref().and_then(facts::hostname),
            region: compute.location.as_deref().and_then(facts::fact),
            // Empty when the VM is in no availability zone.
            zone: compute.zone.as_deref().and_then(facts::fact),
            instance_type: compute.vm_size.as_deref().and_then(facts::fact),
        },
    })
}
