//! `ip_filter`: refuses clients by address, with 403. `deny` prefixes are refused; when
//! `allow` prefixes are given, every other client is refused too; deny wins. The address is
//! the client as `trusted_proxies` let the gateway see it (X-Forwarded-For from a trusted
//! peer), never a header an untrusted peer sent. Lists are inline, in files another tool
//! writes (re-read every `file_interval`), or both; lookups bisect merged ranges.

pub(crate) mod build;
pub(crate) mod config;
mod list_file;
pub(crate) mod metrics;
pub mod prefixes;

use super::{Filter, Flow};
use crate::context::RequestCtx;
use crate::error::{error_response, ProxyError};
use http::request::Parts;
use http::StatusCode;
use ipnet::IpNet;
use list_file::ListFile;
use prefixes::PrefixSet;
use prometheus_client::metrics::counter::Counter;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A validated `ip_filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpFilterSpec {
    pub(crate) allow: Vec<IpNet>,
    pub(crate) allow_file: Option<PathBuf>,
    pub(crate) deny: Vec<IpNet>,
    pub(crate) deny_file: Option<PathBuf>,
    /// How often the list files are read again.
    pub(crate) file_interval: Duration,
}

impl IpFilterSpec {
    fn allows_only_listed(&self) -> bool {
        !self.allow.is_empty() || self.allow_file.is_some()
    }
}

/// One side (allow or deny): its inline prefixes and its file's.
pub(crate) struct Lists {
    inline: PrefixSet,
    file: Option<Arc<ListFile>>,
}

impl Lists {
    fn contains(&self, ip: IpAddr) -> bool {
        self.inline.contains(ip) || self.file.as_ref().is_some_and(|f| f.contains(ip))
    }
}

pub(crate) struct IpFilter {
    deny: Lists,
    /// `None`: everyone not denied passes.
    allow: Option<Lists>,
    /// Refusals because of the deny lists, and because the client was on no allow list.
    denied: Counter,
    not_allowed: Counter,
}

#[async_trait::async_trait]
impl Filter for IpFilter {
    fn kind(&self) -> &'static str {
        "ip_filter"
    }

    async fn on_request(&self, _req: &mut Parts, ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        let ip = ctx.client_ip;
        let refused = if self.deny.contains(ip) {
            &self.denied
        } else if self.allow.as_ref().is_some_and(|allow| !allow.contains(ip)) {
            &self.not_allowed
        } else {
            return Ok(Flow::Continue);
        };
        refused.inc();
        Ok(Flow::Respond(error_response(
            StatusCode::FORBIDDEN,
            "client address not allowed",
            &ctx.request_id,
            false,
        )))
    }

    fn edits_responses(&self) -> bool {
        false
    }
}
