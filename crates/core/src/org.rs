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
