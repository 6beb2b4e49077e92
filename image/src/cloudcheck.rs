//! What each cloud's importer checks, checked on the files the builder wrote, before they are
//! published. The parsers are pure (bytes in, facts or an error naming the field out); the
//! `check_*` functions read just the bytes they need from a file.
//!
//! * GCE (`nomados.tar.gz`): a gzip'd tar whose only member is `disk.raw`, in the GNU format
//!   GCE's importer reads (`tar --format=oldgnu -S`: magic `ustar  \0`, a sparse member is
//!   type `S` with its real size at byte 483), and the disk a whole number of GiB.
//! * Azure (`nomados.vhd`): a fixed VHD: the raw disk followed by one 512-byte footer
//!   (`conectix`, features with the reserved bit 2, version 1.0, data offset all ones, disk
//!   type 2 = fixed, a one's-complement checksum), current size a whole number of MiB and
//!   equal to the disk, the file exactly size + 512 bytes (VHD spec 1.0, "Hard Disk Footer
//!   Format"; Azure "Prepare a Linux VHD": fixed format, virtual size aligned to 1 MiB).
//! * vSphere / AWS import (`nomados.vmdk`): a streamOptimized sparse extent (VMDK 5.0 spec):
//!   header `KDMV` version 3, flags with compressed grains (bit 16) and markers (bit 17),
//!   deflate, an embedded descriptor saying `createType="streamOptimized"`, the capacity
//!   equal to the disk, and a grain directory: where the header says, or, with `gdOffset` =
//!   GD_AT_END (a writer that streams, as VMware's tools do), in the footer copy of the header
//!   1 KiB before the end. qemu-img writes the directory up front and no footer; both forms
//!   are what the spec allows. The file ends with the end-of-stream marker (a zero sector).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::layout::MIB;

pub const GIB: u64 = 1024 * MIB;
const BLOCK: usize = 512;

fn octal_or_base256(field: &[u8], what: &str) -> Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian, the top bit of the first byte is the marker.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(*b)))
                .with_context(|| format!("tar header: {what} overflows"))?;
        }
        return Ok(v);
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8)
        .with_context(|| format!("tar header: {what} `{text}` is not octal"))
}

/// One tar member header as GCE's importer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarMember {
    pub name: String,
    pub typeflag: u8,
    /// Bytes stored in the archive after the header (for a sparse member, only the data).
    pub stored: u64,
    /// The file's size once extracted (a sparse member's real size).
    pub real_size: u64,
    /// A sparse member whose map continues in extension blocks after the header.
    pub extended: bool,
}

/// Parses a tar header block written by GNU tar in `oldgnu` format.
pub fn parse_oldgnu_header(h: &[u8]) -> Result<TarMember> {
    if h.len() != BLOCK {
        bail!("tar header: {} bytes, not {BLOCK}", h.len());
    }
    if &h[257..265] != b"ustar  \0" {
        bail!(
            "tar header: magic {:?} is not GNU oldgnu's \"ustar  \\0\" (tar --format=oldgnu)",
            String::from_utf8_lossy(&h[257..265])
        );
    }
    let recorded = octal_or_base256(&h[148..156], "checksum")?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    if sum != recorded {
        bail!("tar header: checksum {recorded} recorded, {sum} computed");
    }
    let name: String = h[..100]
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let typeflag = h[156];
    let stored = octal_or_base256(&h[124..136], "size")?;
    let (real_size, extended) = match typeflag {
        b'0' | 0 => (stored, false),
        b'S' => (octal_or_base256(&h[483..495], "realsize")?, h[482] != 0),
        t => bail!(
            "tar member `{name}`: type {:?} is not a regular or GNU sparse file",
            t as char
        ),
    };
    Ok(TarMember {
        name,
        typeflag,
        stored,
        real_size,
        extended,
    })
}

/// The GCE rules for the member: called `disk.raw`, a whole number of GiB.
pub fn gce_member_ok(m: &TarMember) -> Result<()> {
    if m.name != "disk.raw" {
        bail!(
            "GCE: the tar member is `{}`; the importer wants exactly `disk.raw`",
            m.name
        );
    }
    if m.real_size == 0 || !m.real_size.is_multiple_of(GIB) {
        bail!(
            "GCE: disk.raw is {} bytes, not a whole number of GiB",
            m.real_size
        );
    }
    Ok(())
}

/// Reads a GCE tarball: one `disk.raw` member that passes [`gce_member_ok`] and has
/// `disk_bytes` bytes, then the end-of-archive blocks. Returns the member.
pub fn check_gce_tar(path: &Path, disk_bytes: u64) -> Result<TarMember> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut z = flate2::read::GzDecoder::new(std::io::BufReader::new(f));
    let mut block = [0u8; BLOCK];
    z.read_exact(&mut block)
        .with_context(|| format!("{}: not a gzip'd tar", path.display()))?;
    let m = parse_oldgnu_header(&block).with_context(|| path.display().to_string())?;
    gce_member_ok(&m).with_context(|| path.display().to_string())?;
    if m.real_size != disk_bytes {
        bail!(
            "{}: disk.raw is {} bytes, the disk is {disk_bytes}",
            path.display(),
            m.real_size
        );
    }
    let mut extended = m.extended;
    while extended {
        z.read_exact(&mut block)?;
        extended = block[504] != 0;
    }
    let padded = m.stored.div_ceil(BLOCK as u64) * BLOCK as u64;
    let skipped = std::io::copy(&mut (&mut z).take(padded), &mut std::io::sink())?;
    if skipped != padded {
        bail!("{}: disk.raw's data is cut short", path.display());
    }
    z.read_exact(&mut block)
        .with_context(|| format!("{}: no end-of-archive block", path.display()))?;
    if block.iter().any(|b| *b != 0) {
        bail!(
            "{}: a second member follows disk.raw; GCE wants only disk.raw",
            path.display()
        );
    }
    Ok(m)
}

/// The fields of a VHD footer that Azure looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdFooter {
    pub current_size: u64,
    pub original_size: u64,
    pub disk_type: u32,
    /// Cylinders, heads, sectors per track.
    pub geometry: (u16, u8, u8),
}

/// The VHD footer checksum: the one's complement of the byte sum, the checksum field
/// (bytes 64..68) left out.
pub fn vhd_checksum(footer: &[u8]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, b)| s.wrapping_add(u32::from(*b)));
    !sum
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn be64(b: &[u8], o: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(v)
}

/// Parses and checks a fixed-disk VHD footer (512 bytes) the way Azure wants it.
pub fn parse_fixed_vhd_footer(f: &[u8]) -> Result<VhdFooter> {
    if f.len() != BLOCK {
        bail!("VHD footer: {} bytes, not {BLOCK}", f.len());
    }
    if &f[0..8] != b"conectix" {
        bail!("VHD footer: cookie is not \"conectix\"");
    }
    if be32(f, 8) & 2 == 0 {
        bail!(
            "VHD footer: features 0x{:08x} lack the reserved bit 2",
            be32(f, 8)
        );
    }
    if be32(f, 12) != 0x0001_0000 {
        bail!(
            "VHD footer: file format version 0x{:08x}, not 1.0",
            be32(f, 12)
        );
    }
    if be64(f, 16) != u64::MAX {
        bail!(
            "VHD footer: data offset 0x{:x}; a fixed disk has 0xFFFFFFFFFFFFFFFF",
            be64(f, 16)
        );
    }
    let disk_type = be32(f, 60);
    if disk_type != 2 {
        bail!("VHD footer: disk type {disk_type}; Azure takes only fixed (2)");
    }
    let (recorded, computed) = (be32(f, 64), vhd_checksum(f));
    if recorded != computed {
        bail!("VHD footer: checksum 0x{recorded:08x} recorded, 0x{computed:08x} computed");
    }
    let current_size = be64(f, 48);
    if current_size == 0 || !current_size.is_multiple_of(MIB) {
        bail!("VHD footer: virtual size {current_size} bytes is not a whole number of MiB (Azure)");
    }
    Ok(VhdFooter {
        current_size,
        original_size: be64(f, 40),
        disk_type,
        geometry: (u16::from_be_bytes([f[56], f[57]]), f[58], f[59]),
    })
}

/// A fixed VHD for Azure: `disk_bytes` of disk, then the footer, nothing else.
pub fn check_azure_vhd(path: &Path, disk_bytes: u64) -> Result<VhdFooter> {
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = f.metadata()?.len();
    if len < BLOCK as u64 {
        bail!("{}: {len} bytes, too short for a VHD", path.display());
    }
    let mut footer = [0u8; BLOCK];
    f.seek(SeekFrom::Start(len - BLOCK as u64))?;
    f.read_exact(&mut footer)?;
    let v = parse_fixed_vhd_footer(&footer).with_context(|| path.display().to_string())?;
    if v.current_size != disk_bytes {
        bail!(
            "{}: VHD virtual size {} bytes, the disk is {disk_bytes}",
            path.display(),
            v.current_size
        );
    }
    if len != v.current_size + BLOCK as u64 {
        bail!(
            "{}: {len} bytes; a fixed VHD of {} bytes is exactly that plus the 512-byte footer",
            path.display(),
            v.current_size
        );
    }
    Ok(v)
}

/// VMDK sparse extent header fields (little-endian), as far as import checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdkHeader {
    pub version: u32,
    pub flags: u32,
    /// Sectors.
    pub capacity: u64,
    pub grain_sectors: u64,
    pub descriptor_offset: u64,
    pub descriptor_sectors: u64,
    pub gd_offset: u64,
    pub compress_algorithm: u16,
}

pub const VMDK_GD_AT_END: u64 = u64::MAX;
const VMDK_FLAG_COMPRESSED: u32 = 1 << 16;
const VMDK_FLAG_MARKERS: u32 = 1 << 17;

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le64(b: &[u8], o: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(v)
}

/// Parses a sparse extent header (the first sector, or the footer copy).
pub fn parse_vmdk_header(h: &[u8]) -> Result<VmdkHeader> {
    if h.len() != BLOCK || &h[0..4] != b"KDMV" {
        bail!("VMDK: no sparse extent header (magic KDMV)");
    }
    Ok(VmdkHeader {
        version: le32(h, 4),
        flags: le32(h, 8),
        capacity: le64(h, 12),
        grain_sectors: le64(h, 20),
        descriptor_offset: le64(h, 28),
        descriptor_sectors: le64(h, 36),
        gd_offset: le64(h, 56),
        compress_algorithm: u16::from_le_bytes([h[77], h[78]]),
    })
}

/// The streamOptimized rules for the header at the start of the file.
pub fn stream_optimized_ok(h: &VmdkHeader) -> Result<()> {
    if h.version != 3 {
        bail!("VMDK: version {}; streamOptimized is version 3", h.version);
    }
    let want = VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS;
    if h.flags & want != want {
        bail!(
            "VMDK: flags 0x{:08x} lack compressed grains and markers (streamOptimized)",
            h.flags
        );
    }
    if h.compress_algorithm != 1 {
        bail!(
            "VMDK: compression {}; streamOptimized uses deflate (1)",
            h.compress_algorithm
        );
    }
    if h.gd_offset == 0 {
        bail!("VMDK: no grain directory offset");
    }
    if h.descriptor_offset == 0 || h.descriptor_sectors == 0 {
        bail!("VMDK: no embedded descriptor");
    }
    Ok(())
}

/// A streamOptimized VMDK of `disk_bytes`: header, descriptor, footer and end-of-stream.
pub fn check_stream_optimized_vmdk(path: &Path, disk_bytes: u64) -> Result<VmdkHeader> {
    let ctx = || path.display().to_string();
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = f.metadata()?.len();
    let mut h = [0u8; BLOCK];
    f.read_exact(&mut h).with_context(ctx)?;
    let hdr = parse_vmdk_header(&h).with_context(ctx)?;
    stream_optimized_ok(&hdr).with_context(ctx)?;
    if hdr.capacity * BLOCK as u64 != disk_bytes {
        bail!(
            "{}: VMDK capacity {} sectors, the disk is {disk_bytes} bytes",
            path.display(),
            hdr.capacity
        );
    }
    if hdr.descriptor_sectors > 64 {
        bail!(
            "{}: VMDK descriptor of {} sectors",
            path.display(),
            hdr.descriptor_sectors
        );
    }
    let mut desc = vec![0u8; (hdr.descriptor_sectors as usize) * BLOCK];
    f.seek(SeekFrom::Start(hdr.descriptor_offset * BLOCK as u64))?;
    f.read_exact(&mut desc).with_context(ctx)?;
    let desc = String::from_utf8_lossy(&desc);
    if !desc
        .lines()
        .any(|l| l.trim() == "createType=\"streamOptimized\"")
    {
        bail!(
            "{}: VMDK descriptor lacks createType=\"streamOptimized\"",
            path.display()
        );
    }
    if len < 4 * BLOCK as u64 || !len.is_multiple_of(BLOCK as u64) {
        bail!(
            "{}: VMDK of {len} bytes is not whole sectors",
            path.display()
        );
    }
    let mut tail = [0u8; 3 * BLOCK];
    f.seek(SeekFrom::Start(len - 3 * BLOCK as u64))?;
    f.read_exact(&mut tail)?;
    let gd = if hdr.gd_offset == VMDK_GD_AT_END {
        // Footer marker (type 3), footer (a header copy with the real directory), EOS.
        if le32(&tail, 12) != 3 {
            bail!(
                "{}: VMDK has GD_AT_END but no footer marker",
                path.display()
            );
        }
        parse_vmdk_header(&tail[BLOCK..2 * BLOCK])
            .with_context(ctx)?
            .gd_offset
    } else {
        hdr.gd_offset
    };
    let descriptor_end = hdr.descriptor_offset + hdr.descriptor_sectors;
    if gd == VMDK_GD_AT_END || gd < descriptor_end || gd * BLOCK as u64 >= len {
        bail!(
            "{}: VMDK grain directory at sector {gd} is outside the file",
            path.display()
        );
    }
    if tail[2 * BLOCK..].iter().any(|b| *b != 0) {
        bail!(
            "{}: VMDK does not end with an end-of-stream marker",
            path.display()
        );
    }
    Ok(hdr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oldgnu(name: &str, typeflag: u8, size: u64, real: u64) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = typeflag;
        h[257..265].copy_from_slice(b"ustar  \0");
        h[483..495].copy_from_slice(format!("{real:011o}\0").as_bytes());
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    #[test]
    fn gce_wants_disk_raw_of_whole_gib_in_oldgnu() {
        let m = parse_oldgnu_header(&oldgnu("disk.raw", b'S', 9 * MIB, 2 * GIB)).unwrap();
        assert_eq!(
            (m.stored, m.real_size, m.typeflag),
            (9 * MIB, 2 * GIB, b'S')
        );
        gce_member_ok(&m).unwrap();
        let plain = parse_oldgnu_header(&oldgnu("disk.raw", b'0', GIB, 0)).unwrap();
        assert_eq!(plain.real_size, GIB);

        let e = gce_member_ok(&parse_oldgnu_header(&oldgnu("nomados.raw", b'0', GIB, 0)).unwrap());
        assert!(e.unwrap_err().to_string().contains("`nomados.raw`"));
        let e = gce_member_ok(
            &parse_oldgnu_header(&oldgnu("disk.raw", b'S', MIB, 1154 * MIB)).unwrap(),
        );
        assert!(e.unwrap_err().to_string().contains("whole number of GiB"));

        let mut posix = oldgnu("disk.raw", b'0', GIB, 0);
        posix[257..265].copy_from_slice(b"ustar\x0000");
        assert!(parse_oldgnu_header(&posix)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut torn = oldgnu("disk.raw", b'0', GIB, 0);
        torn[0] = b'D';
        assert!(parse_oldgnu_header(&torn)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }

    #[test]
    fn tar_numbers_in_octal_and_base256() {
        assert_eq!(octal_or_base256(b"00000001000\0", "x").unwrap(), 512);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 0x01; // 1 << 32
        assert_eq!(octal_or_base256(&big, "x").unwrap(), 1 << 32);
        assert!(octal_or_base256(b"00000009\0", "size").is_err());
    }

    fn fixed_footer(size: u64) -> Vec<u8> {
        let mut f = vec![0u8; BLOCK];
        f[0..8].copy_from_slice(b"conectix");
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        f[40..48].copy_from_slice(&size.to_be_bytes());
        f[48..56].copy_from_slice(&size.to_be_bytes());
        f[56..60].copy_from_slice(&[0x04, 0x00, 16, 63]);
        f[60..64].copy_from_slice(&2u32.to_be_bytes());
        let c = vhd_checksum(&f);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn reseal(f: &mut [u8]) {
        let c = vhd_checksum(f);
        f[64..68].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn azure_fixed_vhd_footer_rules() {
        let v = parse_fixed_vhd_footer(&fixed_footer(1154 * MIB)).unwrap();
        assert_eq!(
            (v.current_size, v.disk_type, v.geometry),
            (1154 * MIB, 2, (1024, 16, 63))
        );

        let err = |f: &[u8]| parse_fixed_vhd_footer(f).unwrap_err().to_string();
        let mut f = fixed_footer(MIB);
        f[70] ^= 1; // unique id changed, checksum not
        assert!(err(&f).contains("checksum"), "{}", err(&f));
        let mut f = fixed_footer(MIB + 512);
        reseal(&mut f);
        assert!(err(&f).contains("whole number of MiB"));
        let mut f = fixed_footer(MIB);
        f[60..64].copy_from_slice(&3u32.to_be_bytes()); // dynamic
        reseal(&mut f);
        assert!(err(&f).contains("disk type 3"));
        let mut f = fixed_footer(MIB);
        f[16..24].copy_from_slice(&512u64.to_be_bytes());
        reseal(&mut f);
        assert!(err(&f).contains("data offset"));
        let mut f = fixed_footer(MIB);
        f[0] = b'C';
        assert!(err(&f).contains("cookie"));
    }

    fn so_header(gd: u64) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&(1u32 | VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS).to_le_bytes());
        h[12..20].copy_from_slice(&2048u64.to_le_bytes());
        h[20..28].copy_from_slice(&128u64.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&20u64.to_le_bytes());
        h[56..64].copy_from_slice(&gd.to_le_bytes());
        h[77..79].copy_from_slice(&1u16.to_le_bytes());
        h
    }

    #[test]
    fn stream_optimized_vmdk_header_rules() {
        let h = parse_vmdk_header(&so_header(VMDK_GD_AT_END)).unwrap();
        stream_optimized_ok(&h).unwrap();
        assert_eq!((h.capacity, h.grain_sectors), (2048, 128));
        let e = |h: Vec<u8>| {
            stream_optimized_ok(&parse_vmdk_header(&h).unwrap())
                .unwrap_err()
                .to_string()
        };
        stream_optimized_ok(&parse_vmdk_header(&so_header(30)).unwrap()).unwrap();
        assert!(e(so_header(0)).contains("grain directory"));
        let mut mono = so_header(VMDK_GD_AT_END);
        mono[4..8].copy_from_slice(&1u32.to_le_bytes()); // monolithicSparse
        assert!(e(mono).contains("version 1"));
        let mut raw = so_header(VMDK_GD_AT_END);
        raw[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert!(e(raw).contains("flags"));
        assert!(parse_vmdk_header(&[0u8; BLOCK]).is_err());
    }
}
