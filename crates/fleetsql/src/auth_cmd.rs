//! `fleetsql users ...` and `fleetsql tokens ...`: edit a SQL node's users
//! and tokens files (re-read by the node within a second of the change).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fleetsql_auth::{Action, NewToken, Role, ScramVerifier, TokensFile, UsersFile};

#[derive(Debug, Args)]
pub(crate) struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add a user, or set an existing user's role and password. The file
    /// keeps a salted SCRAM-SHA-256 verifier, never the password.
    Add {
        name: String,
        /// reader, operator or admin.
        #[arg(long)]
        role: Role,
        /// The users file (created with mode 0600 if missing).
        #[arg(long, env = "FLEETSQL_USERS")]
        file: PathBuf,
        /// Read the password from the first line of standard input instead
        /// of prompting for it.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users and their roles.
    List {
        #[arg(long, env = "FLEETSQL_USERS")]
        file: PathBuf,
    },
    /// Remove a user.
    Remove {
        name: String,
        #[arg(long, env = "FLEETSQL_USERS")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TokensArgs {
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Create a bearer token and print it once (only its hash is kept).
    Create {
        /// reader, operator or admin.
        #[arg(long)]
        role: Role,
        /// How long it is valid: 30d, 12h, 2w, ... or `never`.
        #[arg(long, default_value = "30d", value_parser = parse_expiry)]
        expires: Expiry,
        /// Who or what holds it, recorded in the audit log (default:
        /// `token:<id>`).
        #[arg(long)]
        name: Option<String>,
        /// Only these of the role's actions, comma-separated (run_sql,
        /// subscribe, register_query, delete_query, ack_alert,
        /// manage_users, manage_tokens).
        #[arg(long, value_delimiter = ',')]
        scope: Option<Vec<Action>>,
        /// The tokens file (created with mode 0600 if missing).
        #[arg(long, env = "FLEETSQL_TOKENS")]
        file: PathBuf,
    },
    /// List tokens: id, role, name, scope, expiry.
    List {
        #[arg(long, env = "FLEETSQL_TOKENS")]
        file: PathBuf,
    },
    /// Revoke a token by its id.
    Revoke {
        id: String,
        #[arg(long, env = "FLEETSQL_TOKENS")]
        file: PathBuf,
    },
}

/// `--expires`: a duration or `never` (`None`). A newtype, because clap
/// takes an `Option` field for an optional flag and would not hand the
/// parser's `None` through.
#[derive(Debug, Clone, Copy)]
struct Expiry(Option<std::time::Duration>);

fn parse_expiry(text: &str) -> Result<Expiry, fleetsql_auth::ParseError> {
    fleetsql_auth::parse_duration(text).map(Expiry)
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let password = if from_stdin || !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("again: ").context("cannot read the password")?;
        if first != again {
            bail!("the two passwords differ; nothing was changed");
        }
        first
    };
    if password.is_empty() {
        bail!("an empty password is not allowed; nothing was changed");
    }
    Ok(password)
}

pub(crate) fn users(args: UsersArgs) -> anyhow::Result<()> {
    match args.command {
        UsersCommand::Add {
            name,
            role,
            file,
            password_stdin,
        } => {
            let mut users = UsersFile::load_or_default(&file)?;
            let password = read_password(password_stdin)?;
            let verifier = ScramVerifier::new(&password)?;
            let replaced = users.set(&name, role, &verifier)?;
            users.save(&file)?;
            let what = if replaced { "updated" } else { "added" };
            println!("{what} user {name} ({role}) in {}", file.display());
        }
        UsersCommand::List { file } => {
            for (name, role) in UsersFile::load_or_default(&file)?.list() {
                println!("{name}\t{role}");
            }
        }
        UsersCommand::Remove { name, file } => {
            let mut users = UsersFile::load_or_default(&file)?;
            if !users.remove(&name) {
                bail!(
                    "no user `{name}` in {}; `fleetsql users list` shows them",
                    file.display()
                );
            }
            users.save(&file)?;
            println!("removed user {name} from {}", file.display());
        }
    }
    Ok(())
}

fn time(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}

pub(crate) fn tokens(args: TokensArgs) -> anyhow::Result<()> {
    match args.command {
        TokensCommand::Create {
            role,
            expires,
            name,
            scope,
            file,
        } => {
            let mut tokens = TokensFile::load_or_default(&file)?;
            let (id, token) = tokens.create(NewToken {
                role,
                name,
                scope,
                expires_in: expires.0,
            })?;
            tokens.save(&file)?;
            eprintln!(
                "token {id} ({role}) added to {}; it is shown only now:",
                file.display()
            );
            println!("{token}");
        }
        TokensCommand::List { file } => {
            let now = fleetsql_auth::unix_now();
            println!("id\trole\tname\tscope\texpires");
            for (id, t) in TokensFile::load_or_default(&file)?.list() {
                let scope = t
                    .scope
                    .map(|s| s.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(","))
                    .unwrap_or_else(|| "-".into());
                let expires = match t.expires {
                    None => "never".to_string(),
                    Some(e) if e <= now => format!("{} (expired)", time(e)),
                    Some(e) => time(e),
                };
                println!(
                    "{id}\t{}\t{}\t{scope}\t{expires}",
                    t.role,
                    t.name.as_deref().unwrap_or("-")
                );
            }
        }
        TokensCommand::Revoke { id, file } => {
            let mut tokens = TokensFile::load_or_default(&file)?;
            if !tokens.revoke(&id) {
                bail!(
                    "no token `{id}` in {}; `fleetsql tokens list` shows them",
                    file.display()
                );
            }
            tokens.save(&file)?;
            println!("revoked token {id} in {}", file.display());
        }
    }
    Ok(())
}
