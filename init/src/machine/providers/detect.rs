//! Which cloud this machine runs in, from the firmware's DMI strings (as afterburn and
//! cloud-init do), so a boot on a machine of no cloud asks no metadata service and waits on
//! no timeout. Reading is separated from deciding: [`Dmi::read`] takes the sysfs root (tests
//! hand a directory of their own), [`platforms`] is pure.

use std::io::Read;
use std::path::Path;

use super::Platform;

/// DMI values are short strings; anything longer is not one.
const MAX_DMI_VALUE: u64 = 256;

/// Azure's fixed chassis asset tag, the same on every Azure VM.
const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";
const OPENSTACK_PRODUCTS: [&str; 2] = ["OpenStack Nova", "OpenStack Compute"];
/// OpenStack clouds that mark the chassis instead of the product (cloud-init's list).
const OPENSTACK_ASSET_TAGS: [&str; 5] = [
    "OpenStack Nova",
    "OpenStack Compute",
    "OpenTelekomCloud",
    "SAP CCloud VM",
    "HUAWEICLOUD",
];

/// The DMI strings detection looks at; empty when the file is missing or unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dmi {
    pub sys_vendor: String,
    pub product_name: String,
    pub product_version: String,
    pub product_uuid: String,
    pub bios_version: String,
    pub board_vendor: String,
    pub chassis_asset_tag: String,
    /// Not DMI: Xen's `/sys/hypervisor/uuid`, which starts with `ec2` on Xen-based EC2.
    pub hypervisor_uuid: String,
}

fn read_value(path: &Path) -> String {
    let mut text = String::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_DMI_VALUE).read_to_string(&mut text));
    match read {
        Ok(_) => text.trim().to_string(),
        Err(_) => String::new(),
    }
}

impl Dmi {
    /// Reads the values under `sysfs_root` (`/sys` on a real machine).
    pub fn read(sysfs_root: &Path) -> Self {
        let dmi = sysfs_root.join("class/dmi/id");
        let value = |name: &str| read_value(&dmi.join(name));
        Self {
            sys_vendor: value("sys_vendor"),
            product_name: value("product_name"),
            product_version: value("product_version"),
            product_uuid: value("product_uuid"),
            bios_version: value("bios_version"),
            board_vendor: value("board_vendor"),
            chassis_asset_tag: value("chassis_asset_tag"),
            hypervisor_uuid: read_value(&sysfs_root.join("hypervisor/uuid")),
        }
    }
}

fn starts_with_ignore_case(value: &str, prefix: &str) -> bool {
    value
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn is_ec2(dmi: &Dmi) -> bool {
    // Nitro instances name the vendor (bare-metal ones only the board); Xen-based ones say
    // "amazon" in their versions and start their UUIDs with "ec2".
    dmi.sys_vendor == "Amazon EC2"
        || dmi.board_vendor == "Amazon EC2"
        || dmi.product_version.to_ascii_lowercase().contains("amazon")
        || dmi.bios_version.to_ascii_lowercase().contains("amazon")
        || starts_with_ignore_case(&dmi.product_uuid, "ec2")
        || starts_with_ignore_case(&dmi.hypervisor_uuid, "ec2")
}

fn is_gce(dmi: &Dmi) -> bool {
    dmi.product_name == "Google Compute Engine" || dmi.sys_vendor == "Google"
}

fn is_azure(dmi: &Dmi) -> bool {
    dmi.chassis_asset_tag == AZURE_ASSET_TAG
}

fn is_openstack(dmi: &Dmi) -> bool {
    OPENSTACK_PRODUCTS.contains(&dmi.product_name.as_str())
        || OPENSTACK_ASSET_TAGS.contains(&dmi.chassis_asset_tag.as_str())
}

/// The platforms these DMI strings belong to (normally one, none off the cloud).
pub fn platforms(dmi: &Dmi) -> Vec<Platform> {
    type Check = fn(&Dmi) -> bool;
    let checks: [(Platform, Check); 4] = [
        (Platform::Ec2, is_ec2),
        (Platform::Gce, is_gce),
        (Platform::Azure, is_azure),
        (Platform::OpenStack, is_openstack),
    ];
    checks
        .into_iter()
        .filter(|(_, matches)| matches(dmi))
        .map(|(platform, _)| platform)
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A fake sysfs with the given files (paths relative to the sysfs root); the providers'
    /// tests use it too.
    pub(in crate::machine::providers) fn sysfs(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        root
    }

    fn detect(files: &[(&str, &str)]) -> Vec<Platform> {
        let root = sysfs(files);
        platforms(&Dmi::read(root.path()))
    }

    #[test]
    fn ec2_nitro_by_vendor() {
        let found = detect(&[
            ("class/dmi/id/sys_vendor", "Amazon EC2\n"),
            ("class/dmi/id/product_name", "m5.large\n"),
        ]);
        assert_eq!(found, vec![Platform::Ec2]);
    }

    #[test]
    fn ec2_metal_by_board_vendor() {
        assert_eq!(
            detect(&[("class/dmi/id/board_vendor", "Amazon EC2\n")]),
            vec![Platform::Ec2]
        );
    }

    #[test]
    fn ec2_xen_by_versions_or_uuid() {
        let xen = [
            ("class/dmi/id/sys_vendor", "Xen\n"),
            ("class/dmi/id/product_name", "HVM domU\n"),
        ];
        let with = |extra: (&'static str, &'static str)| {
            let mut files = xen.to_vec();
            files.push(extra);
            detect(&files)
        };
        assert_eq!(detect(&xen), vec![], "plain Xen is not EC2");
        assert_eq!(
            with(("class/dmi/id/product_version", "4.11.amazon\n")),
            vec![Platform::Ec2]
        );
        assert_eq!(
            with(("class/dmi/id/bios_version", "4.2.amazon\n")),
            vec![Platform::Ec2]
        );
        assert_eq!(
            with(("hypervisor/uuid", "ec2e1916-9099-7caf-fd21-012345abcdef\n")),
            vec![Platform::Ec2]
        );
        assert_eq!(
            with((
                "class/dmi/id/product_uuid",
                "EC2E1916-9099-7CAF-FD21-012345ABCDEF\n"
            )),
            vec![Platform::Ec2]
        );
    }

    #[test]
    fn gce_by_product_name() {
        assert_eq!(
            detect(&[
                ("class/dmi/id/sys_vendor", "Google\n"),
                ("class/dmi/id/product_name", "Google Compute Engine\n"),
            ]),
            vec![Platform::Gce]
        );
    }

    #[test]
    fn azure_by_asset_tag() {
        let found = detect(&[
            ("class/dmi/id/sys_vendor", "Microsoft Corporation\n"),
            ("class/dmi/id/product_name", "Virtual Machine\n"),
            (
                "class/dmi/id/chassis_asset_tag",
                "7783-7084-3265-9085-8269-3286-77\n",
            ),
        ]);
        assert_eq!(found, vec![Platform::Azure]);
        // Hyper-V on a desk is the same vendor and product, without the tag.
        assert_eq!(
            detect(&[
                ("class/dmi/id/sys_vendor", "Microsoft Corporation\n"),
                ("class/dmi/id/product_name", "Virtual Machine\n"),
            ]),
            vec![]
        );
    }

    #[test]
    fn openstack_by_product_or_asset_tag() {
        assert_eq!(
            detect(&[("class/dmi/id/product_name", "OpenStack Nova\n")]),
            vec![Platform::OpenStack]
        );
        assert_eq!(
            detect(&[("class/dmi/id/product_name", "OpenStack Compute\n")]),
            vec![Platform::OpenStack]
        );
        assert_eq!(
            detect(&[("class/dmi/id/chassis_asset_tag", "OpenTelekomCloud\n")]),
            vec![Platform::OpenStack]
        );
    }

    #[test]
    fn a_plain_qemu_or_an_empty_sysfs_is_no_cloud() {
        assert_eq!(
            detect(&[
                ("class/dmi/id/sys_vendor", "QEMU\n"),
                (
                    "class/dmi/id/product_name",
                    "Standard PC (Q35 + ICH9, 2009)\n"
                ),
            ]),
            vec![]
        );
        assert_eq!(detect(&[]), vec![]);
    }

    #[test]
    fn an_oversized_dmi_file_is_read_only_up_to_its_cap() {
        let long = format!("Amazon EC2{}", " ".repeat(10_000)) + "junk";
        let root = sysfs(&[("class/dmi/id/sys_vendor", &long)]);
        let dmi = Dmi::read(root.path());
        assert_eq!(dmi.sys_vendor, "Amazon EC2");
    }
}
