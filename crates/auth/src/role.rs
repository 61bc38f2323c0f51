//! Roles and the actions every front end asks them about.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// What a request does, as every front end names it (pg, HTTP, Flight SQL,
/// XML-RPC, console), so one table of permissions holds everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Log in (recorded in the audit log when refused).
    Login,
    /// Run a SQL query (every front end is read-only).
    RunSql,
    /// Subscribe to a persistent query's topic (SSE, WebSocket, XML-RPC).
    Subscribe,
    /// Register a persistent query.
    RegisterQuery,
    /// Delete a persistent query.
    DeleteQuery,
    /// Acknowledge an alert.
    AckAlert,
    /// Add, change or remove users.
    ManageUsers,
    /// Create or revoke tokens.
    ManageTokens,
    /// Read the audit log (`fleet_audit`): every user's SQL and address.
    ReadAudit,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Login,
        Action::RunSql,
        Action::Subscribe,
        Action::RegisterQuery,
        Action::DeleteQuery,
        Action::AckAlert,
        Action::ManageUsers,
        Action::ManageTokens,
        Action::ReadAudit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::RunSql => "run_sql",
            Action::Subscribe => "subscribe",
            Action::RegisterQuery => "register_query",
            Action::DeleteQuery => "delete_query",
            Action::AckAlert => "ack_alert",
            Action::ManageUsers => "manage_users",
            Action::ManageTokens => "manage_tokens",
            Action::ReadAudit => "read_audit",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Action, ParseError> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| ParseError::Action(s.to_string()))
    }
}

/// A user's or token's role; each one allows what the one below it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// SQL and topic subscriptions.
    Reader,
    /// Also registers and deletes persistent queries and acknowledges alerts.
    Operator,
    /// Also manages users and tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Operator, Role::Admin];

    pub fn allows(self, action: Action) -> bool {
        let needed = match action {
            Action::Login | Action::RunSql | Action::Subscribe => Role::Reader,
            Action::RegisterQuery | Action::DeleteQuery | Action::AckAlert => Role::Operator,
            Action::ManageUsers | Action::ManageTokens | Action::ReadAudit => Role::Admin,
        };
        self >= needed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Role, ParseError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseError::Role(s.to_string()))
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    Password,
    Token,
    /// A client certificate signed by the configured client CA.
    Cert,
    /// Authentication is off on this front end (no users file).
    None,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::Token => "token",
            AuthMethod::Cert => "cert",
            AuthMethod::None => "none",
        }
    }
}

/// Who is asking: the name recorded in the audit log and the role checked
/// before each action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub how: AuthMethod,
    /// A scoped token's actions; `None` allows all the role allows.
    pub scope: Option<Vec<Action>>,
}

impl Principal {
    pub fn new(name: impl Into<String>, role: Role, how: AuthMethod) -> Principal {
        Principal {
            name: name.into(),
            role,
            how,
            scope: None,
        }
    }

    /// A client of a front end whose authentication is off: everything is
    /// allowed, as before authentication existed; `name` is what the client
    /// called itself (the pg startup user), for the audit log.
    pub fn unauthenticated(name: impl Into<String>) -> Principal {
        Principal::new(name, Role::Admin, AuthMethod::None)
    }

    pub fn allows(&self, action: Action) -> bool {
        self.role.allows(action)
            && self
                .scope
                .as_ref()
                .is_none_or(|scope| action == Action::Login || scope.contains(&action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_what_the_issue_lists() {
        use Action::*;
        let reader = [Login, RunSql, Subscribe];
        let operator = [RegisterQuery, DeleteQuery, AckAlert];
        let admin = [ManageUsers, ManageTokens];
        for a in reader {
            assert!(Role::Reader.allows(a) && Role::Operator.allows(a) && Role::Admin.allows(a));
        }
        for a in operator {
            assert!(!Role::Reader.allows(a) && Role::Operator.allows(a) && Role::Admin.allows(a));
        }
        for a in admin {
            assert!(!Role::Reader.allows(a) && !Role::Operator.allows(a) && Role::Admin.allows(a));
        }
    }

    #[test]
    fn a_scope_narrows_a_role_but_never_widens_it() {
        let mut p = Principal::new("t", Role::Operator, AuthMethod::Token);
        p.scope = Some(vec![Action::RunSql, Action::ManageUsers]);
        assert!(p.allows(Action::RunSql));
        assert!(!p.allows(Action::Subscribe));
        assert!(!p.allows(Action::ManageUsers));
    }

    #[test]
    fn names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().ok(), Some(r));
        }
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>().ok(), Some(a));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
