//! Integration tests against real servers: PostgreSQL clusters and a Garage
//! S3 server that the harness starts on free loopback ports.

mod fault_proxy;
mod harness;

mod binlog_oracle;
mod command;
mod deploy;
mod drill;
mod failures;
mod faults;
mod kill_sweep;
mod kube_copies;
mod kube_platform;
mod kube_server;
mod kubernetes;
mod mysql;
mod pipeline;
mod pitr;
mod pitr_oracle;
mod policies;
mod roundtrip;
mod secrets;
mod unattended;
