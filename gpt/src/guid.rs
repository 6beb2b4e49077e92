//! GUIDs as GPT stores them (mixed-endian) and as humans and the kernel read them.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A GUID held in its canonical (string/big-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid([u8; 16]);

impl Guid {
    /// EFI System Partition.
    pub const ESP: Guid = Guid::from_canonical(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
    /// Linux root (x86-64), from the Discoverable Partitions Specification.
    pub const LINUX_ROOT_X86_64: Guid =
        Guid::from_canonical(0x4F68BCE3_E8CD_4DB1_96E7_FBCAF984B709);
    /// Linux filesystem data.
    pub const LINUX_DATA: Guid = Guid::from_canonical(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);

    const fn from_canonical(v: u128) -> Guid {
        Guid(v.to_be_bytes())
    }

    /// Canonical byte order (as printed).
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }

    /// The on-disk GPT encoding: the first three fields are little-endian.
    pub fn to_gpt_bytes(&self) -> [u8; 16] {
        let b = self.0;
        let mut out = b;
        out[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        out[4..6].copy_from_slice(&[b[5], b[4]]);
        out[6..8].copy_from_slice(&[b[7], b[6]]);
        out
    }

    /// Inverse of [`Guid::to_gpt_bytes`].
    pub fn from_gpt_bytes(d: &[u8; 16]) -> Guid {
        // The swap is its own inverse.
        Guid(Guid(*d).to_gpt_bytes())
    }

    /// A version 4 (random) GUID built from 16 bytes of entropy.
    pub fn v4_from(mut b: [u8; 16]) -> Guid {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    /// A random GUID from the kernel's CSPRNG.
    pub fn random() -> std::io::Result<Guid> {
        let mut b = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
        Ok(Guid::v4_from(b))
    }

    /// A GUID derived from a seed and a purpose, for reproducible builds.
    pub fn derived(seed: &str, purpose: &str) -> Guid {
        let mut h = Sha256::new();
        h.update(b"nomados-guid\0");
        h.update(seed.as_bytes());
        h.update([0]);
        h.update(purpose.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        Guid::v4_from(b)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Guid {
    type Err = String;
    fn from_str(s: &str) -> Result<Guid, String> {
        let groups: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return Err(format!(
                "`{s}` is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            ));
        }
        let raw = hex::decode(groups.concat()).map_err(|e| format!("`{s}`: {e}"))?;
        let mut b = [0u8; 16];
        b.copy_from_slice(&raw);
        Ok(Guid(b))
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_type_has_the_well_known_on_disk_bytes() {
        // From the UEFI spec: C12A7328-F81F-11D2-BA4B-00A0C93EC93B is stored as
        // 28 73 2A C1 1F F8 D2 11 BA 4B 00 A0 C9 3E C9 3B.
        assert_eq!(
            Guid::ESP.to_gpt_bytes(),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
        assert_eq!(
            Guid::ESP.to_string(),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
    }

    #[test]
    fn parse_print_and_disk_encoding_round_trip() {
        let g: Guid = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709".parse().unwrap();
        assert_eq!(g, Guid::LINUX_ROOT_X86_64);
        assert_eq!(Guid::from_gpt_bytes(&g.to_gpt_bytes()), g);
        assert!("4F68BCE3-E8CD-4DB1-96E7".parse::<Guid>().is_err());
        assert!("zF68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
            .parse::<Guid>()
            .is_err());
    }

    #[test]
    fn derived_guids_are_stable_distinct_and_v4() {
        let a = Guid::derived("seed", "root");
        assert_eq!(a, Guid::derived("seed", "root"));
        assert_ne!(a, Guid::derived("seed", "data"));
        assert_ne!(a, Guid::derived("seed2", "root"));
        let s = a.to_string();
        assert_eq!(&s[14..15], "4", "version nibble in {s}");
        assert!(
            matches!(&s[19..20], "8" | "9" | "a" | "b"),
            "variant in {s}"
        );
    }

    #[test]
    fn random_guids_differ() {
        assert_ne!(Guid::random().unwrap(), Guid::random().unwrap());
    }
}
