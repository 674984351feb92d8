//! Roles and permissions: who may do what, decided by one function,
//! [`RoleCatalog::allows`].
//!
//! Built-in roles are `owner`, `admin` and `member`. Custom roles come from
//! config and are sets of permissions from the fixed vocabulary below. The
//! billing admin holds `billing:manage` whatever their role. Every route
//! names the permission it needs; none asks for a role by name, so a custom
//! role holding a permission may do exactly what an owner may do with it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// The fixed permission vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    OrgUpdate,
    OrgDelete,
    OrgAudit,
    MembersInvite,
    MembersUpdate,
    MembersRemove,
    BillingManage,
    /// Re-fetch the subscription from its provider now.
    BillingSync,
    /// Choose any member as the org's billing admin.
    BillingSetAdmin,
    ResourcesManage,
    /// Create, list and revoke the org's API keys (`ok_…`).
    ApiKeysManage,
}

impl Permission {
    pub const ALL: [Permission; 11] = [
        Permission::OrgUpdate,
        Permission::OrgDelete,
        Permission::OrgAudit,
        Permission::MembersInvite,
        Permission::MembersUpdate,
        Permission::MembersRemove,
        Permission::BillingManage,
        Permission::BillingSync,
        Permission::BillingSetAdmin,
        Permission::ResourcesManage,
        Permission::ApiKeysManage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrgUpdate => "org:update",
            Permission::OrgDelete => "org:delete",
            Permission::OrgAudit => "org:audit",
            Permission::MembersInvite => "members:invite",
            Permission::MembersUpdate => "members:update",
            Permission::MembersRemove => "members:remove",
            Permission::BillingManage => "billing:manage",
            Permission::BillingSync => "billing:sync",
            Permission::BillingSetAdmin => "billing:set_admin",
            Permission::ResourcesManage => "resources:manage",
            Permission::ApiKeysManage => "api_keys:manage",
        }
    }

    pub fn parse(text: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role's name: `owner`, `admin`, `member`, or a custom role from config.
/// Lower-case letters, digits, `_` and `-`; 1 to 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoleName(String);

impl RoleName {
    pub const OWNER: &'static str = "owner";
    pub const ADMIN: &'static str = "admin";
    pub const MEMBER: &'static str = "member";

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= 32
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::invalid(
                "role",
                format!(
                    "`{}` is not a role name (lower-case letters, digits, `_` and `-`, at most 32)",
                    raw.chars().take(40).collect::<String>()
                ),
            ))
        }
    }

    pub fn owner() -> Self {
        Self(Self::OWNER.to_owned())
    }

    pub fn member() -> Self {
        Self(Self::MEMBER.to_owned())
    }

    pub fn is_owner(&self) -> bool {
        self.0 == Self::OWNER
    }

    pub fn is_builtin(&self) -> bool {
        matches!(self.0.as_str(), Self::OWNER | Self::ADMIN | Self::MEMBER)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        RoleName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A custom role as written in config: `[roles.support] permissions = [...]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CustomRoleConfig {
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Every role the deployment knows, with its permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleCatalog {
    custom: BTreeMap<RoleName, Vec<Permission>>,
}

impl RoleCatalog {
    /// Builds the catalog from config, refusing unknown permissions and custom
    /// roles that shadow a built-in one. The message names the role and key.
    pub fn from_config(custom: &BTreeMap<String, CustomRoleConfig>) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        for (name, cfg) in custom {
            let role = RoleName::parse(name).map_err(|e| format!("roles.{name}: {e}"))?;
            if role.is_builtin() {
                return Err(format!(
                    "roles.{name}: `{name}` is a built-in role and can't be redefined; pick another name"
                ));
            }
            let mut perms = Vec::new();
            for p in &cfg.permissions {
                let perm = Permission::parse(p).ok_or_else(|| {
                    let known: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
                    format!("roles.{name}.permissions: unknown permission `{p}` (known: {})", known.join(", "))
                })?;
                perms.push(perm);
            }
            out.insert(role, perms);
        }
        Ok(Self { custom: out })
    }

    /// Every role this deployment knows: the built-in ones, then the custom ones.
    pub fn names(&self) -> Vec<String> {
        [RoleName::OWNER, RoleName::ADMIN, RoleName::MEMBER]
            .into_iter()
            .map(str::to_owned)
            .chain(self.custom.keys().map(|r| r.as_str().to_owned()))
            .collect()
    }

    /// Whether `role` names a role this deployment knows.
    pub fn knows(&self, role: &RoleName) -> bool {
        role.is_builtin() || self.custom.contains_key(role)
    }

    /// A known role for a name given by a caller, or a clear error.
    pub fn resolve(&self, raw: &str) -> Result<RoleName, DomainError> {
        let role = RoleName::parse(raw)?;
        if self.knows(&role) {
            Ok(role)
        } else {
            let mut known: Vec<String> = vec!["owner".into(), "admin".into(), "member".into()];
            known.extend(self.custom.keys().map(|r| r.to_string()));
            Err(DomainError::invalid("role", format!("unknown role `{role}` (known: {})", known.join(", "))))
        }
    }

    /// The one permission check. `is_billing_admin` adds `billing:manage`.
    pub fn allows(&self, role: &RoleName, is_billing_admin: bool, permission: Permission) -> bool {
        if is_billing_admin && permission == Permission::BillingManage {
            return true;
        }
        match role.as_str() {
            RoleName::OWNER => true,
            // The org's existence and its money stay with the owners.
            RoleName::ADMIN => !matches!(
                permission,
                Permission::OrgDelete
                    | Permission::BillingManage
                    | Permission::BillingSync
                    | Permission::BillingSetAdmin
            ),
            RoleName::MEMBER => false,
            _ => self.custom.get(role).is_some_and(|perms| perms.contains(&permission)),
        }
    }

    /// The permissions a role holds, for display.
    pub fn permissions_of(&self, role: &RoleName, is_billing_admin: bool) -> Vec<Permission> {
        Permission::ALL.into_iter().filter(|p| self.allows(role, is_billing_admin, *p)).collect()
    }
}

/// Whether an actor of role `actor` may move a member from `from` to `to`.
/// Only owners grant or revoke `owner`. Keeping one owner is the store's job
/// (it must hold under concurrent changes).
pub fn check_role_change(actor: &RoleName, from: &RoleName, to: &RoleName) -> Result<(), DomainError> {
    if (from.is_owner() || to.is_owner()) && !actor.is_owner() {
        return Err(DomainError::forbidden("only an owner can grant or revoke the owner role"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> RoleName {
        RoleName::parse(name).expect("valid role")
    }

    #[test]
    fn owners_may_do_everything_and_members_nothing_by_default() {
        let catalog = RoleCatalog::default();
        for p in Permission::ALL {
            assert!(catalog.allows(&role("owner"), false, p));
            assert!(!catalog.allows(&role("member"), false, p));
        }
        assert!(!catalog.allows(&role("admin"), false, Permission::OrgDelete));
        assert!(catalog.allows(&role("admin"), false, Permission::MembersInvite));
    }

    #[test]
    fn admins_hold_neither_org_delete_nor_any_billing_permission() {
        let catalog = RoleCatalog::default();
        let held = catalog.permissions_of(&role("admin"), false);
        for p in
            [Permission::OrgDelete, Permission::BillingManage, Permission::BillingSync, Permission::BillingSetAdmin]
        {
            assert!(!held.contains(&p), "{p}");
        }
        assert_eq!(held.len(), Permission::ALL.len() - 4);
    }

    #[test]
    fn a_custom_role_holds_owner_only_permissions_it_names() {
        let mut cfg = BTreeMap::new();
        cfg.insert(
            "closer".to_string(),
            CustomRoleConfig {
                permissions: vec!["org:delete".into(), "billing:sync".into(), "billing:set_admin".into()],
                description: None,
            },
        );
        let catalog = RoleCatalog::from_config(&cfg).expect("valid");
        assert_eq!(
            catalog.permissions_of(&role("closer"), false),
            [Permission::OrgDelete, Permission::BillingSync, Permission::BillingSetAdmin]
        );
    }

    #[test]
    fn every_permission_parses_from_its_name() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn the_billing_admin_holds_billing_manage_whatever_the_role() {
        let catalog = RoleCatalog::default();
        assert!(catalog.allows(&role("member"), true, Permission::BillingManage));
        assert!(!catalog.allows(&role("member"), true, Permission::MembersInvite));
    }

    #[test]
    fn custom_roles_hold_exactly_their_permissions() {
        let mut cfg = BTreeMap::new();
        cfg.insert(
            "support".to_string(),
            CustomRoleConfig { permissions: vec!["members:invite".into()], description: None },
        );
        let catalog = RoleCatalog::from_config(&cfg).expect("valid");
        assert!(catalog.allows(&role("support"), false, Permission::MembersInvite));
        assert!(!catalog.allows(&role("support"), false, Permission::MembersRemove));
        assert!(!catalog.allows(&role("unknown"), false, Permission::MembersInvite));
        assert!(catalog.resolve("support").is_ok());
        assert!(catalog.resolve("nope").is_err());
    }

    #[test]
    fn bad_custom_roles_are_refused_with_the_key_named() {
        let mut cfg = BTreeMap::new();
        cfg.insert(
            "support".to_string(),
            CustomRoleConfig { permissions: vec!["members:fly".into()], description: None },
        );
        let err = RoleCatalog::from_config(&cfg).expect_err("unknown permission");
        assert!(err.contains("roles.support.permissions") && err.contains("members:fly"), "{err}");
        let mut cfg = BTreeMap::new();
        cfg.insert("owner".to_string(), CustomRoleConfig::default());
        assert!(RoleCatalog::from_config(&cfg).is_err());
    }

    #[test]
    fn only_owners_touch_the_owner_role() {
        assert!(check_role_change(&role("admin"), &role("member"), &role("owner")).is_err());
        assert!(check_role_change(&role("admin"), &role("owner"), &role("member")).is_err());
        assert!(check_role_change(&role("admin"), &role("member"), &role("admin")).is_ok());
        assert!(check_role_change(&role("owner"), &role("owner"), &role("member")).is_ok());
    }
}
