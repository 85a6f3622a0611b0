//! The Wrenn host agent library: VMs, network slots, disks and images on one host.
//! `main.rs` is a thin shell over [`server`], so tests start the real agent in-process.

pub mod accel;
pub mod command;
pub mod config;
pub mod convert;
pub mod disk;
pub mod envd_client;
pub mod error;
pub mod exec;
pub mod ids;
pub mod image_build;
pub mod images;
pub mod lease;
pub mod network;
pub mod pins;
pub mod reclaim;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod vmm;
