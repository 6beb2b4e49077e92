//! Cloud metadata services (EC2, GCE, Azure, OpenStack), each behind one small interface:
//! a module with `fetch(&Endpoint) -> Result<Found, FetchError>`. [`discover`] asks only the
//! platforms the firmware's DMI strings name ([`detect`]), so a machine of no cloud waits on
//! nothing; on Azure it also sends the wireserver's "ready" report ([`wireserver`]).
//!
//! Everything a service answers is treated as hostile: bounded in time ([`http`]) and size
//! (the caps below), facts filtered ([`facts`]), errors naming provider and URL only.

mod azure;
pub mod detect;
mod ec2;
mod facts;
mod gce;
mod http;
#[cfg(test)]
mod mock;
mod openstack;
mod wireserver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::found::Found;
pub use http::{FetchError, Problem};

/// User data larger than this is refused. Every platform's own limit is far below it (EC2
/// 16 KiB, Azure 64 KiB, OpenStack 64 KiB, GCE 256 KiB per metadata value), so 1 MiB never
/// refuses what a platform accepts, and bounds what the child holds and validates.
pub const USER_DATA_CAP: usize = 1024 * 1024;
/// A metadata document (OpenStack's meta_data.json, Azure's instance document without its
/// user data, a goal state): a few KiB in practice.
pub const DOCUMENT_CAP: usize = 256 * 1024;
/// One value (an instance ID, a zone, a token).
pub const VALUE_CAP: usize = 4 * 1024;

/// A cloud with a metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Ec2,
    Gce,
    Azure,
    OpenStack,
}

impl Platform {
    pub const ALL: [Platform; 4] = [
        Platform::Ec2,
        Platform::Gce,
        Platform::Azure,
        Platform::OpenStack,
    ];

    /// The name used in logs, in [`Found::source`] and by an operator's override.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Ec2 => "ec2",
            Platform::Gce => "gce",
            Platform::Azure => "azure",
            Platform::OpenStack => "openstack",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Where to look; [`Settings::default`] is a real machine. Base URLs end with `/`. Tests point the URLs at their own
/// servers and the sysfs root at a directory of their own.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sysfs_root: PathBuf,
    /// Ask these platforms without looking at DMI (an operator who knows better than the
    /// firmware, or a test).
    pub only: Option<Vec<Platform>>,
    pub ec2: String,
    pub gce: String,
    pub azure_imds: String,
    pub azure_wireserver: String,
    pub openstack: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sysfs_root: PathBuf::from("/sys"),
            only: None,
            ec2: "http://169.254.169.254/".to_string(),
            // The address rather than metadata.google.internal: no DNS needed this early.
            gce: "http://169.254.169.254/computeMetadata/v1/".to_string(),
            azure_imds: "http://169.254.169.254/".to_string(),
            azure_wireserver: "http://168.63.129.16/".to_string(),
            openstack: "http://169.254.169.254/".to_string(),
        }
    }
}

/// Asks each detected metadata service in turn, within `deadline` in all; the first that
/// answers wins. `None` off the cloud, or when every detected service failed (logged).
pub async fn discover(deadline: Duration) -> Option<Found> {
    discover_with(&Settings::default(), deadline).await
}

/// [`discover`] with the places to look given.
pub async fn discover_with(settings: &Settings, deadline: Duration) -> Option<Found> {
    let end = Instant::now() + deadline;
    let platforms = match &settings.only {
        Some(only) => only.clone(),
        None => detect::platforms(&detect::Dmi::read(&settings.sysfs_root)),
    };
    if platforms.is_empty() {
        crate::info!("no cloud platform in the DMI strings: no metadata service asked");
        return None;
    }
    for platform in platforms {
        match ask(settings, platform, end).await {
            Ok(found) => {
                crate::info!("{}", provided(&found));
                return Some(found);
            }
            Err(e) => crate::warn!("{e}"),
        }
    }
    None
}

async fn ask(settings: &Settings, platform: Platform, end: Instant) -> Result<Found, FetchError> {
    let name = platform.name();
    match platform {
        Platform::Ec2 => ec2::fetch(&http::Endpoint::new(name, &settings.ec2, end)?).await,
        Platform::Gce => gce::fetch(&http::Endpoint::new(name, &settings.gce, end)?).await,
        Platform::OpenStack => {
            openstack::fetch(&http::Endpoint::new(name, &settings.openstack, end)?).await
        }
        Platform::Azure => {
            let imds = http::Endpoint::new(name, &settings.azure_imds, end)?;
            let wire = http::Endpoint::new("azure-wireserver", &settings.azure_wireserver, end)?;
            // Side by side: the ready report is owed even when the IMDS fails or is slow.
            let (found, ready) = tokio::join!(azure::fetch(&imds), wireserver::report_ready(&wire));
            log_ready(&ready);
            found
        }
    }
}

fn log_ready(ready: &Result<(), FetchError>) {
    match ready {
        Ok(()) => crate::info!("azure: reported ready to the wireserver"),
        Err(e) => crate::error!(
            "{e}; without the ready report Azure marks this VM as failed to provision"
        ),
    }
}

fn on_azure(settings: &Settings) -> bool {
    match &settings.only {
        Some(only) => only.contains(&Platform::Azure),
        None => {
            detect::platforms(&detect::Dmi::read(&settings.sysfs_root)).contains(&Platform::Azure)
        }
    }
}

/// Azure's ready report alone, for a boot whose configuration came from a source found
/// before the metadata services (a config URL, a config drive): the report is owed on every
/// boot on Azure, and [`discover`] sends it only when it runs. Off Azure it does nothing.
/// Returns whether a report was accepted.
pub async fn report_ready_if_azure(deadline: Duration) -> bool {
    report_ready_if_azure_with(&Settings::default(), deadline).await
}

/// [`report_ready_if_azure`] with the places to look given.
pub async fn report_ready_if_azure_with(settings: &Settings, deadline: Duration) -> bool {
    if !on_azure(settings) {
        return false;
    }
    let end = Instant::now() + deadline;
    let ready = match http::Endpoint::new("azure-wireserver", &settings.azure_wireserver, end) {
        Ok(wire) => wireserver::report_ready(&wire).await,
        Err(e) => Err(e),
    };
    log_ready(&ready);
    ready.is_ok()
}

/// What a provider handed over, for the log: which parts, never their contents.
fn provided(found: &Found) -> String {
    let mut parts = Vec::new();
    match &found.user_data {
        Some(data) => parts.push(format!("user data ({} bytes)", data.len())),
        None => parts.push("no user data".to_string()),
    }
    let facts = &found.facts;
    for (name, value) in [
        ("instance id", &facts.instance_id),
        ("hostname", &facts.hostname),
        ("region", &facts.region),
        ("zone", &facts.zone),
        ("instance type", &facts.instance_type),
    ] {
        if value.is_some() {
            parts.push(name.to_string());
        }
    }
    format!(
        "{}: metadata service provided {}",
        found.source,
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::routing::get;
    use axum::Router;

    use super::detect::tests::sysfs;
    use super::*;
    use crate::machine::found::Facts;

    /// A server that counts every request and answers none usefully.
    async fn counting() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = hits.clone();
        let router = Router::new().fallback(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }
        });
        (mock::serve(router).await.to_string(), hits)
    }

    fn settings_at(root: &std::path::Path, url: &str) -> Settings {
        Settings {
            sysfs_root: root.to_path_buf(),
            only: None,
            ec2: url.to_string(),
            gce: url.to_string(),
            azure_imds: url.to_string(),
            azure_wireserver: url.to_string(),
            openstack: url.to_string(),
        }
    }

    const AZURE_TAG: (&str, &str) = (
        "class/dmi/id/chassis_asset_tag",
        "7783-7084-3265-9085-8269-3286-77\n",
    );

    #[tokio::test]
    async fn off_the_cloud_no_service_is_asked_and_nothing_waits() {
        let (url, hits) = counting().await;
        let root = sysfs(&[("class/dmi/id/sys_vendor", "QEMU\n")]);
        let started = Instant::now();
        let found = discover_with(&settings_at(root.path(), &url), Duration::from_secs(30)).await;
        assert_eq!(found, None);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_detected_platform_is_asked() {
        let (url, hits) = counting().await;
        let root = sysfs(&[("class/dmi/id/product_name", "OpenStack Nova\n")]);
        let found =
            discover_with(&settings_at(root.path(), &url), Duration::from_millis(600)).await;
        assert_eq!(found, None, "the service only fails");
        assert!(hits.load(Ordering::SeqCst) >= 2, "asked, and asked again");
    }

    #[tokio::test]
    async fn the_override_skips_detection() {
        let router = Router::new()
            .route(
                "/openstack/latest/meta_data.json",
                get(|| async { r#"{"uuid": "abc-1", "availability_zone": "az1"}"# }),
            )
            .route("/openstack/latest/user_data", get(|| async { "data" }));
        let url = mock::serve(router).await.to_string();
        let root = sysfs(&[]);
        let mut settings = settings_at(root.path(), &url);
        settings.only = Some(vec![Platform::from_name("openstack").unwrap()]);
        let found = discover_with(&settings, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            found,
            Found {
                source: "openstack",
                user_data: Some(b"data".to_vec()),
                facts: Facts {
                    instance_id: Some("abc-1".into()),
                    zone: Some("az1".into()),
                    ..Facts::default()
                },
            }
        );
    }

    fn azure_imds(document: &'static str) -> Router {
        Router::new().route("/metadata/instance", get(move || async move { document }))
    }

    #[tokio::test]
    async fn on_azure_the_ready_report_goes_with_the_user_data() {
        let imds = azure_imds(r#"{"compute": {"vmId": "vm-1", "userData": "aGVsbG8="}}"#);
        let wire = mock::wire::Wire::default();
        let wire_url = mock::serve(mock::wire::router(wire.clone())).await;
        let root = sysfs(&[AZURE_TAG]);
        let mut settings = settings_at(root.path(), mock::serve(imds).await.as_str());
        settings.azure_wireserver = wire_url.to_string();
        let found = discover_with(&settings, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(found.source, "azure");
        assert_eq!(found.user_data.as_deref(), Some(&b"hello"[..]));
        let reports = wire.reports.lock().unwrap();
        assert_eq!(reports.len(), 1);
        mock::wire::assert_ready_report(&reports[0]);
    }

    #[tokio::test]
    async fn on_azure_the_ready_report_goes_even_when_the_imds_fails() {
        let imds = azure_imds("not json");
        let wire = mock::wire::Wire::default();
        let wire_url = mock::serve(mock::wire::router(wire.clone())).await;
        let root = sysfs(&[AZURE_TAG]);
        let mut settings = settings_at(root.path(), mock::serve(imds).await.as_str());
        settings.azure_wireserver = wire_url.to_string();
        let found = discover_with(&settings, Duration::from_secs(5)).await;
        assert_eq!(found, None);
        assert_eq!(wire.reports.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_ready_report_alone_goes_only_on_azure() {
        let wire = mock::wire::Wire::default();
        let wire_url = mock::serve(mock::wire::router(wire.clone())).await;
        let elsewhere = sysfs(&[("class/dmi/id/sys_vendor", "Amazon EC2\n")]);
        let settings = settings_at(elsewhere.path(), wire_url.as_str());
        assert!(!report_ready_if_azure_with(&settings, Duration::from_secs(5)).await);
        assert!(wire.reports.lock().unwrap().is_empty());

        let azure = sysfs(&[AZURE_TAG]);
        let settings = settings_at(azure.path(), wire_url.as_str());
        assert!(report_ready_if_azure_with(&settings, Duration::from_secs(5)).await);
        let reports = wire.reports.lock().unwrap();
        assert_eq!(reports.len(), 1);
        mock::wire::assert_ready_report(&reports[0]);
    }

    #[test]
    fn the_log_line_names_what_was_provided_not_its_contents() {
        let found = Found {
            source: "ec2",
            user_data: Some(b"secret = 1".to_vec()),
            facts: Facts {
                instance_id: Some("i-1".into()),
                zone: Some("z".into()),
                ..Facts::default()
            },
        };
        assert_eq!(
            provided(&found),
            "ec2: metadata service provided user data (10 bytes), instance id, zone"
        );
    }

    #[test]
    fn platform_names_round_trip() {
        for platform in Platform::ALL {
            assert_eq!(Platform::from_name(platform.name()), Some(platform));
        }
        assert_eq!(Platform::from_name("digitalocean"), None);
    }
}
