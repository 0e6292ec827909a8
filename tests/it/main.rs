//! Integration tests: one binary, real servers on ephemeral loopback ports.
#![allow(missing_docs)]

mod support;

mod architecture;
mod binary;
mod capacity_reports;
mod capture_inputs;
mod correlation;
mod dashboard;
mod demo_backend;
mod demo_edits;
mod distributed;
mod golden;
mod har;
mod html;
mod junit;
mod kinto;
mod kubernetes;
mod live_metrics;
mod observe;
mod postgres;
mod proxy;
mod radicale;
mod redaction;
mod replay;
mod replay_faults;
mod report_inputs;
mod retention;
mod rules;
mod storage;
mod synapse;
mod tls;
mod trace_context;
mod websocket_bounds;
