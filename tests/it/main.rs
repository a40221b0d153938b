//! The one integration-test harness: real sshd instances, the real binary, the shipped examples.

mod support;

mod ansible;
mod cli;
mod crash;
mod docker;
mod docs;
mod dolphindb;
mod embed;
mod journal;
mod jump;
mod layers;
mod modes;
mod oceanbase;
mod oms;
mod openmldb;
mod operator;
mod parity;
mod privilege;
mod products;
mod server_journal;
mod simulation;
mod sql;
mod ssh;
mod teams;
mod toy;
