//! `fleetsql sqlnode` flags for its client-facing security, over its
//! topology entry's `users`, `tokens`, `tls_cert`, `tls_key`, `client_ca`.

use std::path::PathBuf;

use clap::Args;
use fleetsql_tiers::{SecurityFiles, Topology};

#[derive(Debug, Default, Args)]
pub(crate) struct SecurityArgs {
    /// SQL node and demo: the users file (`fleetsql users add`); Postgres
    /// clients log in with SCRAM-SHA-256. Without it (and no `users` in
    /// the entry), authentication is off.
    #[arg(long)]
    users: Option<PathBuf>,
    /// SQL node and demo: the tokens file (`fleetsql tokens create`) for HTTP.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// The certificate chain (PEM): a SQL node's (or the demo's) for its
    /// Postgres and HTTP ports; an agent joining by itself (--cluster)
    /// proves its name with it to its proxies, with --tls-ca.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// SQL node and demo: a CA (PEM) whose client certificates log in on the
    /// Postgres wire as the user their CN names.
    #[arg(long)]
    client_ca: Option<PathBuf>,
}

impl SecurityArgs {
    pub(crate) fn any(&self) -> bool {
        self.users.is_some()
            || self.tokens.is_some()
            || self.tls_cert.is_some()
            || self.client_ca.is_some()
    }

    /// Clients must log in (a users or tokens file).
    pub(crate) fn authenticates(&self) -> bool {
        self.users.is_some() || self.tokens.is_some()
    }

    /// The client ports speak TLS.
    pub(crate) fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Every front end asks for a login over TLS: Postgres needs the users
    /// file for that (tokens are HTTP's and Flight SQL's only).
    pub(crate) fn authenticates_over_tls(&self) -> bool {
        self.users.is_some() && self.tls_cert.is_some()
    }

    #[cfg(test)]
    pub(crate) fn with_files(users: &str, tls_cert: &str, tls_key: &str) -> SecurityArgs {
        SecurityArgs {
            users: Some(users.into()),
            tls_cert: Some(tls_cert.into()),
            tls_key: Some(tls_key.into()),
            ..SecurityArgs::default()
        }
    }

    /// The files the flags name.
    pub(crate) fn files(&self) -> SecurityFiles {
        SecurityFiles {
            users: self.users.clone(),
            tokens: self.tokens.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            client_ca: self.client_ca.clone(),
        }
    }

    /// Writes the flags given over the node's entry.
    pub(crate) fn apply(&self, topology: &mut Topology, name: &str) {
        // An unknown name is reported by the start, with the known ones.
        if let Some(entry) = topology.sqlnodes.get_mut(name) {
            self.files().write_over(entry);
        }
    }
}
