//! The roles of accounts (PRODUCT.md "Accounts"): what a user, or a token narrowed to a role,
//! may do. Roles are ordered: each can do everything the one before it can.

use crate::vocabulary;

vocabulary! {
    /// A user's role, or the narrower role a token was given. Ordered `viewer < operator <
    /// admin`.
    pub enum Role ("role") {
        /// Reads everything but secrets: events, workflows, jobs and their logs, servers,
        /// variables (a secret's value is never readable by anyone), metrics; manages its own
        /// tokens.
        Viewer = "viewer",
        /// A viewer who also changes and runs events and workflows, cancels runs, writes
        /// variables and manages servers (host keys included).
        Operator = "operator",
        /// Everything: users, every user's tokens, the audit log, pruning.
        Admin = "admin",
    }
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Operator => 1,
            Role::Admin => 2,
        }
    }

    /// Whether this role may do what `required` may.
    pub fn allows(self, required: Role) -> bool {
        self.rank() >= required.rank()
    }

    /// The narrower of two roles (a token's role never exceeds its user's).
    pub fn min(self, other: Role) -> Role {
        if self.rank() <= other.rank() {
            self
        } else {
            other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        assert_eq!(Role::Admin.min(Role::Viewer), Role::Viewer);
        assert_eq!(Role::Viewer.min(Role::Operator), Role::Viewer);
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .to_string()
            .contains("viewer, operator, admin"));
    }
}
