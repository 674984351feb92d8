//! Organizations and memberships as the domain sees them.

use serde::{Deserialize, Serialize};

use crate::roles::RoleName;
use crate::{OrgId, Timestamp, UserId};

/// `personal` (one member, no invitations) or `team`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgKind {
    Personal,
    Team,
}

impl OrgKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgKind::Personal => "personal",
            OrgKind::Team => "team",
        }
    }

    pub fn parse(text: &str) -> Option<OrgKind> {
        match text {
            "personal" => Some(OrgKind::Personal),
            "team" => Some(OrgKind::Team),
            _ => None,
        }
    }
}

/// What happens to an owner's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerLoss {
    /// The owner is demoted to a role that is not an owner.
    Demoted,
    /// The owner leaves or is removed.
    Removed,
}

/// Every org keeps at least one owner: refuses a change that would take
/// the last one (`owners` counts the owners now, under the org's lock). A
/// personal org's owner can't leave it at all.
pub fn ensure_owner_remains(kind: OrgKind, owners: i64, loss: OwnerLoss) -> Result<(), crate::DomainError> {
    if owners > 1 {
        return Ok(());
    }
    Err(match (kind, loss) {
        (OrgKind::Personal, OwnerLoss::Removed) => {
            crate::DomainError::personal_org("you can't leave your personal organization; it belongs to you")
        }
        _ => crate::DomainError::LastOwner,
    })
}

#[cfg(test)]
mod owner_tests {
    use super::*;

    #[test]
    fn the_last_owner_can_be_neither_demoted_nor_removed() {
        assert!(ensure_owner_remains(OrgKind::Team, 2, OwnerLoss::Demoted).is_ok());
        assert!(ensure_owner_remains(OrgKind::Team, 2, OwnerLoss::Removed).is_ok());
        assert_eq!(ensure_owner_remains(OrgKind::Team, 1, OwnerLoss::Demoted), Err(crate::DomainError::LastOwner));
        assert_eq!(ensure_owner_remains(OrgKind::Team, 1, OwnerLoss::Removed), Err(crate::DomainError::LastOwner));
        assert_eq!(ensure_owner_remains(OrgKind::Personal, 1, OwnerLoss::Demoted), Err(crate::DomainError::LastOwner));
        assert!(matches!(
            ensure_owner_remains(OrgKind::Personal, 1, OwnerLoss::Removed),
            Err(crate::DomainError::PersonalOrg { .. })
        ));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Org {
    pub id: OrgId,
    pub kind: OrgKind,
    pub name: String,
    pub billing_email: Option<String>,
    pub settings: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
}

/// A user's place in an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub role: RoleName,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
}

/// A user as orgplane knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub active_org_id: Option<OrgId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
}
