//! Azure's wireserver "ready" report: until a VM reports Ready, Azure considers it still
//! provisioning and, after a while, failed. The report is the goal state's incarnation,
//! container ID and role instance ID posted back as a Health document (the protocol
//! afterburn and the Azure Linux agent speak, `x-ms-version: 2012-11-30`). It is owed on
//! every boot on Azure, with or without user data.

use std::time::Duration;

use reqwest::Method;

use super::http::{Endpoint, FetchError};
use super::{DOCUMENT_CAP, VALUE_CAP};

const GOAL_STATE_PATH: &str = "machine/?comp=goalstate";
const HEALTH_PATH: &str = "machine/?comp=health";
const VERSION: &str = "2012-11-30";
const AGENT_NAME: &str = "nomados";
/// Each request is already retried while it fails transiently; a round starts again from
/// the goal state when the report itself was refused (a stale incarnation, say).
const ROUNDS: u32 = 3;
const ROUND_PAUSE: Duration = Duration::from_millis(500);
/// IDs longer than this are not Azure's.
const MAX_ID_LEN: usize = 256;

/// What the report needs from the goal state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoalState {
    pub incarnation: String,
    pub container_id: String,
    pub instance_id: String,
}

/// The text of the first `<name>` element in `xml`. The goal state is a small document
/// with fixed element names and no attributes on the elements read here, and every value
/// taken from it is checked against a strict alphabet before it is used.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let length = xml[start..].find(&close)?;
    Some(xml[start..start + length].trim())
}

fn checked(value: Option<&str>, name: &str, allowed: fn(char) -> bool) -> Result<String, String> {
    let value = value.ok_or_else(|| format!("goal state has no {name}"))?;
    if value.is_empty() || value.len() > MAX_ID_LEN || !value.chars().all(allowed) {
        return Err(format!("goal state's {name} is not a valid ID"));
    }
    Ok(value.to_string())
}

/// Parses the goal state. The values are restricted to letters, digits, `-`, `_` and `.`,
/// so they can be written into the report's XML without escaping.
pub fn parse_goal_state(xml: &str) -> Result<GoalState, String> {
    let id_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let container = element(xml, "Container").ok_or("goal state has no Container")?;
    let role = element(container, "RoleInstance").ok_or("goal state has no RoleInstance")?;
    Ok(GoalState {
        incarnation: checked(element(xml, "Incarnation"), "Incarnation", |c| {
            c.is_ascii_digit()
        })?,
        container_id: checked(element(container, "ContainerId"), "ContainerId", id_char)?,
        instance_id: checked(element(role, "InstanceId"), "InstanceId", id_char)?,
    })
}

/// The Health document that reports this role instance Ready.
pub fn health_report(goal: &GoalState) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <GoalStateIncarnation>{}</GoalStateIncarnation>
  <Container>
    <ContainerId>{}</ContainerId>
    <RoleInstanceList>
      <Role>
        <InstanceId>{}</InstanceId>
        <Health>
          <State>Ready</State>
        </Health>
      </Role>
    </RoleInstanceList>
  </Container>
</Health>
"#,
        goal.incarnation, goal.container_id, goal.instance_id
    )
}

async fn report_once(endpoint: &Endpoint) -> Result<(), FetchError> {
    let answer = endpoint
        .request(Method::GET, GOAL_STATE_PATH, DOCUMENT_CAP)
        .header("x-ms-version", VERSION)
        .header("x-ms-agent-name", AGENT_NAME)
        .send_required()
        .await?;
    let goal = parse_goal_state(answer.text()?).map_err(|why| answer.invalid(why))?;
    endpoint
        .request(Method::POST, HEALTH_PATH, VALUE_CAP)
        .header("x-ms-version", VERSION)
        .header("x-ms-agent-name", AGENT_NAME)
        .body("text/xml; charset=utf-8", health_report(&goal))
        .send_required()
        .await?;
    Ok(())
}

/// Reports Ready, retrying within the endpoint's deadline.
pub async fn report_ready(endpoint: &Endpoint) -> Result<(), FetchError> {
    let mut round = 1;
    loop {
        match report_once(endpoint).await {
            Ok(()) => return Ok(()),
            Err(e) if round < ROUNDS && endpoint.remaining() > ROUND_PAUSE => {
                crate::warn!("{e}; reporting ready again");
                tokio::time::sleep(ROUND_PAUSE).await;
                round += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::machine::providers::http::Problem;
    use crate::machine::providers::mock;
    use crate::machine::providers::mock::wire::{
        assert_ready_report, goal_state, router, Wire, CONTAINER_ID, INSTANCE_ID,
    };

    async fn report(wire: Wire, deadline: Duration) -> Result<(), FetchError> {
        let base = mock::serve(router(wire)).await;
        report_ready(&mock::endpoint("azure-wireserver", &base, deadline)).await
    }

    #[tokio::test]
    async fn ready_report_carries_the_goal_state_ids() {
        let wire = Wire::default();
        report(wire.clone(), Duration::from_secs(5)).await.unwrap();
        let reports = wire.reports.lock().unwrap();
        assert_eq!(reports.len(), 1);
        assert_ready_report(&reports[0]);
    }

    #[tokio::test]
    async fn a_failing_wireserver_is_asked_again() {
        let wire = Wire::default();
        wire.failures.store(2, Ordering::SeqCst);
        report(wire.clone(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(wire.reports.lock().unwrap().len(), 1);
        assert_eq!(wire.failures.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_wireserver_that_never_accepts_gives_up_at_the_deadline() {
        let wire = Wire::default();
        wire.failures.store(usize::MAX, Ordering::SeqCst);
        let started = Instant::now();
        let err = report(wire.clone(), Duration::from_millis(800))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(err.problem, Problem::Status(500) | Problem::TimedOut),
            "{err}"
        );
        assert!(err.to_string().contains("machine/?comp=health"), "{err}");
        assert!(wire.reports.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_goal_state_with_markup_in_an_id_is_refused() {
        let wire = Wire::default();
        *wire.goal_state.lock().unwrap() =
            goal_state("3", "x&lt;/ContainerId&gt;<Evil/>", INSTANCE_ID);
        let err = report(wire.clone(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("ContainerId is not a valid ID"),
            "{err}"
        );
        assert!(wire.reports.lock().unwrap().is_empty());
    }

    #[test]
    fn goal_state_parsing() {
        let parsed = parse_goal_state(&goal_state("12", CONTAINER_ID, INSTANCE_ID)).unwrap();
        assert_eq!(
            parsed,
            GoalState {
                incarnation: "12".into(),
                container_id: CONTAINER_ID.into(),
                instance_id: INSTANCE_ID.into(),
            }
        );
        assert!(parse_goal_state("<GoalState/>").is_err());
        assert_eq!(
            parse_goal_state(&goal_state("x1", CONTAINER_ID, INSTANCE_ID)),
            Err("goal state's Incarnation is not a valid ID".into())
        );
        assert_eq!(
            parse_goal_state(&goal_state("1", "", INSTANCE_ID)),
            Err("goal state's ContainerId is not a valid ID".into())
        );
    }
}
