//! NomadOS image builder: root filesystem staging, GPT disk images bootable by BIOS and
//! UEFI (syslinux on the ESP), cloud formats and a manifest.
//!
//! Pure modules (`guid`, `layout`, `gpt`, `bootcfg`, parts of `rootfs` and `manifest`) hold
//! the logic and tests; `disk`, `formats` and `tools` run the external programs.

pub mod bootcfg;
pub mod cloudcheck;
pub mod disk;
pub mod formats;
pub mod gpt;
pub mod guid;
pub mod layout;
pub mod manifest;
pub mod rootfs;
pub mod slotpayload;
pub mod tools;
