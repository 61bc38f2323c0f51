//! `fleetsql sqlnode` flags for its client-facing security, over its
//! topology entry's `users`, `tokens`, `tls_cert`, `tls_key`, `client_ca`.

use std::path::PathBuf;

use clap::Args;
use fleetsql_tiers::Topology;

#[derive(Debug, Args)]
pub(crate) struct SecurityArgs {
    /// SQL node only: the users file (`fleetsql users add`); Postgres
    /// clients log in with SCRAM-SHA-256. Without it (and no `users` in
    /// the entry), authentication is off.
    #[arg(long)]
    users: Option<PathBuf>,
    /// SQL node only: the tokens file (`fleetsql tokens create`) for HTTP.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// SQL node only: the certificate chain (PEM) of its Postgres and HTTP
    /// ports.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// SQL node only: the key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// SQL node only: a CA (PEM) whose client certificates log in on the
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

    /// Writes the flags given over the node's entry.
    pub(crate) fn apply(&self, topology: &mut Topology, name: &str) -> anyhow::Result<()> {
        let Some(entry) = topology.sqlnodes.get_mut(name) else {
            // The start reports the unknown name with the known ones.
            return Ok(());
        };
        let flags = [
            (&self.users, &mut entry.users),
            (&self.tokens, &mut entry.tokens),
            (&self.tls_cert, &mut entry.tls_cert),
            (&self.tls_key, &mut entry.tls_key),
            (&self.client_ca, &mut entry.client_ca),
        ];
        for (flag, field) in flags {
            if let Some(path) = flag {
                *field = Some(path.clone());
            }
        }
        Ok(())
    }
}
