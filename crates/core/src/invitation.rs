//! Invitation rules: who may accept, and until when.

use serde::Serialize;
use time::Duration;

use crate::roles::RoleName;
use crate::{DomainError, InvitationId, OrgId, Timestamp, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
    Revoked,
}

impl InvitationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Declined => "declined",
            InvitationStatus::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "accepted" => Some(Self::Accepted),
            "declined" => Some(Self::Declined),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    pub id: InvitationId,
    pub org_id: OrgId,
    pub email: String,
    pub role: RoleName,
    pub status: InvitationStatus,
    pub invited_by: Option<UserId>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
}

/// The longest invitation lifetime (`invitations.ttl_hours`) a deployment
/// may configure: a year.
pub const MAX_TTL_HOURS: u32 = 366 * 24;

/// When an invitation sent at `now` that lives `ttl_hours` expires; `None`
/// when that is past the last representable instant (year 9999). Start-up
/// validation keeps `ttl_hours` far below that; this makes sure a value
/// that slipped through is an error, never a panic.
pub fn expires_at(now: Timestamp, ttl_hours: u32) -> Option<Timestamp> {
    now.checked_add(Duration::hours(i64::from(ttl_hours)))
}

/// The signed-in user trying to accept or decline.
pub struct Invitee<'a> {
    pub email: Option<&'a str>,
    pub email_verified: bool,
}

/// Whether `invitee` may settle (accept or decline) `invitation` at `now`.
pub fn check_settle(invitation: &Invitation, invitee: &Invitee<'_>, now: Timestamp) -> Result<(), DomainError> {
    match invitation.status {
        InvitationStatus::Pending => {}
        InvitationStatus::Accepted => return Err(DomainError::conflict("this invitation has already been accepted")),
        InvitationStatus::Declined => return Err(DomainError::conflict("this invitation has been declined")),
        InvitationStatus::Revoked => {
            return Err(DomainError::conflict(
                "this invitation was revoked; ask an admin of the organization for a new one",
            ));
        }
    }
    if now >= invitation.expires_at {
        return Err(DomainError::InvitationExpired);
    }
    let email = invitee.email.ok_or_else(|| {
        DomainError::forbidden(
            "your token carries no e-mail address; sign in with the address the invitation was sent to",
        )
    })?;
    if !invitee.email_verified {
        return Err(DomainError::forbidden(
            "your e-mail address is not verified; verify it with your identity provider, then try again",
        ));
    }
    if !email.eq_ignore_ascii_case(&invitation.email) {
        return Err(DomainError::forbidden(
            "this invitation was sent to another e-mail address; sign in with that address to accept it",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invitation_expires_ttl_hours_after_it_is_sent() {
        let now = Timestamp::now_utc();
        assert_eq!(expires_at(now, 168), Some(now + Duration::days(7)));
        assert_eq!(expires_at(now, MAX_TTL_HOURS), Some(now + Duration::days(366)));
    }

    #[test]
    fn an_expiry_past_the_end_of_time_is_none_not_a_panic() {
        let now = Timestamp::now_utc();
        assert_eq!(expires_at(now, u32::MAX), None);
    }

    fn invitation(status: InvitationStatus, now: Timestamp) -> Invitation {
        Invitation {
            id: InvitationId::new(),
            org_id: OrgId::new(),
            email: "dr.johnson@clinic.example".into(),
            role: RoleName::member(),
            status,
            invited_by: None,
            expires_at: now + Duration::days(7),
            created_at: now,
        }
    }

    #[test]
    fn only_the_verified_addressee_may_accept_a_pending_invitation() {
        let now = Timestamp::UNIX_EPOCH + Duration::days(20000);
        let inv = invitation(InvitationStatus::Pending, now);
        let ok = Invitee { email: Some("Dr.Johnson@clinic.example"), email_verified: true };
        assert!(check_settle(&inv, &ok, now).is_ok());
        let unverified = Invitee { email: Some("dr.johnson@clinic.example"), email_verified: false };
        assert!(matches!(check_settle(&inv, &unverified, now), Err(DomainError::Forbidden { .. })));
        let other = Invitee { email: Some("mallory@evil.example"), email_verified: true };
        assert!(matches!(check_settle(&inv, &other, now), Err(DomainError::Forbidden { .. })));
        let none = Invitee { email: None, email_verified: true };
        assert!(check_settle(&inv, &none, now).is_err());
    }

    #[test]
    fn expired_and_settled_invitations_are_refused() {
        let now = Timestamp::UNIX_EPOCH + Duration::days(20000);
        let ok = Invitee { email: Some("dr.johnson@clinic.example"), email_verified: true };
        let inv = invitation(InvitationStatus::Pending, now);
        assert_eq!(check_settle(&inv, &ok, now + Duration::days(8)), Err(DomainError::InvitationExpired));
        for s in [InvitationStatus::Accepted, InvitationStatus::Declined, InvitationStatus::Revoked] {
            assert!(matches!(check_settle(&invitation(s, now), &ok, now), Err(DomainError::Conflict { .. })));
        }
    }
}
