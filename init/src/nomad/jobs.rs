//! Jobs: parse, list, read, register, plan, purge, and their allocations.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::{encode, Client};

/// Answer of a job registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponse {
    #[serde(rename = "EvalID", default)]
    pub eval_id: String,
    #[serde(default)]
    pub job_modify_index: u64,
    #[serde(default)]
    pub warnings: String,
}

impl Client {
    /// Turns HCL into an API job with the agent's own parser.
    pub async fn parse_hcl(&self, hcl: &str) -> Result<Value> {
        self.post(
            "/v1/jobs/parse",
            &json!({ "JobHCL": hcl, "Canonicalize": true }),
        )
        .await
    }

    /// Lists job stubs across all namespaces. `meta` asks for each stub's Meta (Nomad
    /// 1.4+ honours it, older agents ignore it); `filter` is a bexpr (Nomad 1.3+).
    pub async fn list_jobs(&self, meta: bool, filter: Option<&str>) -> Result<Vec<Value>> {
        let mut path = String::from("/v1/jobs?namespace=*");
        if meta {
            path.push_str("&meta=true");
        }
        if let Some(f) = filter {
            path.push_str("&filter=");
            path.push_str(&encode(f));
        }
        self.get_list(path, "jobs").await
    }

    pub async fn read_job(&self, namespace: &str, id: &str) -> Result<Option<Value>> {
        self.get_optional(&format!(
            "/v1/job/{}?namespace={}",
            encode(id),
            encode(namespace)
        ))
        .await
    }

    /// Registers `job`. With `enforce_index`, Nomad refuses the write unless the job's
    /// modify index still equals it (0: the job must not exist), so concurrent appliers
    /// never overwrite each other's newer writes.
    pub async fn register(
        &self,
        job: &Value,
        enforce_index: Option<u64>,
        submission: Option<Value>,
    ) -> Result<RegisterResponse> {
        let mut body = json!({ "Job": job });
        if let Some(index) = enforce_index {
            body["EnforceIndex"] = json!(true);
            body["JobModifyIndex"] = json!(index);
        }
        if let Some(s) = submission {
            body["Submission"] = s;
        }
        let ns = job["Namespace"].as_str().unwrap_or("default");
        let path = format!("/v1/jobs?namespace={}", encode(ns));
        let v = self.post(&path, &body).await?;
        serde_json::from_value(v).map_err(|e| ApiError::Decode {
            method: Method::POST,
            path,
            message: e.to_string(),
        })
    }

    /// Nomad's own dry run of `job`, with its structured diff against what runs.
    pub async fn plan(&self, job: &Value) -> Result<Value> {
        let id = job["ID"].as_str().unwrap_or_default();
        let ns = job["Namespace"].as_str().unwrap_or("default");
        self.post(
            &format!("/v1/job/{}/plan?namespace={}", encode(id), encode(ns)),
            &json!({ "Job": job, "Diff": true }),
        )
        .await
    }

    pub async fn deregister_purge(&self, namespace: &str, id: &str) -> Result<()> {
        self.delete(&format!(
            "/v1/job/{}?purge=true&namespace={}",
            encode(id),
            encode(namespace)
        ))
        .await
        .map(|_| ())
    }

    /// `GET /v1/job/<id>/evaluations`: the job's evaluations (Nomad's `Evaluation`, with
    /// `Status`, `FailedTGAllocs`, `BlockedEval`, `CreateIndex`), bounded like every list.
    pub async fn job_evaluations(&self, namespace: &str, id: &str) -> Result<Vec<Value>> {
        let path = format!(
            "/v1/job/{}/evaluations?namespace={}",
            encode(id),
            encode(namespace)
        );
        self.get_list(path, "evaluations").await
    }

    pub async fn allocations(&self, namespace: &str, id: &str) -> Result<Vec<Value>> {
        let v = self
            .get(&format!(
                "/v1/job/{}/allocations?namespace={}",
                encode(id),
                encode(namespace)
            ))
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}
