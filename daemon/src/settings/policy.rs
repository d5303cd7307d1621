//! `[access]`: who may reach the local socket, and the policy of who may
//! register, call and read the daemon's tables (`docs/security.md`).
//!
//! User and group names are resolved here, when the settings are loaded (at
//! start and on SIGHUP), so that the router decides from numbers alone and
//! never calls into NSS on the event loop.

use serde::Deserialize;

/// Rules `[[access.allow]]` may list.
pub const RULES_MAX: usize = 1024;
/// Entries one list of a rule (functions, users, groups, peers) may hold.
pub const RULE_ENTRIES_MAX: usize = 1024;

/// `[access]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessSettings {
    /// `access.socket_group`: the group given the socket file (mode 0660);
    /// `None` keeps rpcd's own group.
    pub socket_group: Option<u32>,
    /// `[[access.allow]]`: empty means no policy (whoever reaches the socket
    /// may do anything); otherwise what no rule allows is denied.
    pub rules: Vec<Rule>,
}

/// One `[[access.allow]]` rule: a subject (local users and groups, or remote
/// peers) and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// Local users by uid; `any_user` for `"*"`.
    pub users: Vec<u32>,
    /// `users = ["*"]`: every local user.
    pub any_user: bool,
    /// Local groups: a caller is in one when its primary gid is the group's,
    /// or the group database lists its user as a member.
    pub groups: Vec<Group>,
    /// Remote peers by their `[peers]` name; `"*"` is any remote caller,
    /// unauthenticated ones included.
    pub peers: Vec<String>,
    /// Function-name globs the subject may register (local only).
    pub register: Vec<String>,
    /// Function-name globs the subject may call.
    pub call: Vec<String>,
    /// The subject may read stats, the function list and the naming table.
    pub stats: bool,
}

/// A group as resolved at load: its gid and its members' uids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group id.
    pub gid: u32,
    /// Uids of the users the group database lists as members.
    pub members: Vec<u32>,
}

/// A user or group as written: a name or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum NameOrId {
    Id(u32),
    Name(String),
}

/// `[access]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAccess {
    socket_group: Option<NameOrId>,
    #[serde(default)]
    allow: Vec<FileRule>,
}

/// `[[access.allow]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    #[serde(default)]
    users: Vec<NameOrId>,
    #[serde(default)]
    groups: Vec<NameOrId>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    register: Vec<String>,
    #[serde(default)]
    call: Vec<String>,
    #[serde(default)]
    stats: bool,
}

impl FileAccess {
    /// Overlay onto `a`; names resolved, errors name the key. Rules
    /// replace the earlier source's (a policy is read whole).
    pub(super) fn overlay(self, a: &mut AccessSettings) -> Result<(), String> {
        if let Some(g) = self.socket_group {
            a.socket_group = Some(
                resolve_group(&g)
                    .map_err(|e| format!("`access.socket_group`: {e}"))?
                    .gid,
            );
        }
        if self.allow.is_empty() {
            return Ok(());
        }
        if self.allow.len() > RULES_MAX {
            return Err(format!("`access.allow`: at most {RULES_MAX} rules"));
        }
        let mut rules = Vec::with_capacity(self.allow.len());
        for (i, r) in self.allow.into_iter().enumerate() {
            rules.push(
                r.resolve()
                    .map_err(|e| format!("`access.allow[{i}]`: {e}"))?,
            );
        }
        a.rules = rules;
        Ok(())
    }
}

impl FileRule {
    fn resolve(self) -> Result<Rule, String> {
        for (key, n) in [
            ("users", self.users.len()),
            ("groups", self.groups.len()),
            ("peers", self.peers.len()),
            ("register", self.register.len()),
            ("call", self.call.len()),
        ] {
            if n > RULE_ENTRIES_MAX {
                return Err(format!("{key}: at most {RULE_ENTRIES_MAX} entries"));
            }
        }
        let local = !self.users.is_empty() || !self.groups.is_empty();
        let remote = !self.peers.is_empty();
        if local == remote {
            return Err(
                "a rule names either local users/groups or remote peers (exactly one kind)".into(),
            );
        }
        if !self.peers.is_empty() && !self.register.is_empty() {
            return Err("remote peers cannot register functions here".into());
        }
        if self.register.is_empty() && self.call.is_empty() && !self.stats {
            return Err("allows nothing: give register, call or stats".into());
        }
        for g in self.register.iter().chain(&self.call) {
            if g.is_empty() || g.chars().any(char::is_control) {
                return Err(format!("{g:?} is not a function-name glob"));
            }
        }
        let mut rule = Rule {
            peers: self.peers,
            register: self.register,
            call: self.call,
            stats: self.stats,
            ..Rule::default()
        };
        for u in &self.users {
            match u {
                NameOrId::Name(n) if n == "*" => rule.any_user = true,
                u => rule.users.push(resolve_user(u)?),
            }
        }
        for g in &self.groups {
            rule.groups.push(resolve_group(g)?);
        }
        Ok(rule)
    }
}

fn resolve_user(u: &NameOrId) -> Result<u32, String> {
    match u {
        NameOrId::Id(id) => Ok(*id),
        NameOrId::Name(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => Ok(user.uid.as_raw()),
            Ok(None) => Err(format!("no user {name:?}")),
            Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
        },
    }
}

fn resolve_group(g: &NameOrId) -> Result<Group, String> {
    let group = match g {
        NameOrId::Id(id) => nix::unistd::Group::from_gid((*id).into()),
        NameOrId::Name(name) => nix::unistd::Group::from_name(name),
    };
    let group = match group {
        Ok(Some(group)) => group,
        // A number with no entry in the group database still names a gid.
        Ok(None) => match g {
            NameOrId::Id(id) => {
                return Ok(Group {
                    gid: *id,
                    members: Vec::new(),
                })
            }
            NameOrId::Name(name) => return Err(format!("no group {name:?}")),
        },
        Err(e) => return Err(format!("cannot look up group: {e}")),
    };
    let members = group
        .mem
        .iter()
        .filter_map(|m| nix::unistd::User::from_name(m).ok().flatten())
        .map(|u| u.uid.as_raw())
        .collect();
    Ok(Group {
        gid: group.gid.as_raw(),
        members,
    })
}

/// Whether `name` matches `glob`: `*` is any run of characters (dots
/// included), `?` one character, everything else itself.
pub fn glob_match(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point: linear-ish, no recursion.
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == n[ni]) {
            gi += 1;
            ni += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ni));
            gi += 1;
        } else if let Some((sg, sn)) = star {
            gi = sg + 1;
            ni = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("kv.*", "kv.get"));
        assert!(glob_match("kv.*", "kv."));
        assert!(!glob_match("kv.*", "kvx.get"));
        assert!(glob_match("*", "anything.at.all"));
        assert!(glob_match("*.get", "kv.get"));
        assert!(!glob_match("*.get", "kv.put"));
        assert!(glob_match("k?.g*t", "kv.get"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("kv.get", "kv.get"));
        assert!(!glob_match("kv.get", "kv.gets"));
    }

    #[test]
    fn rules_resolve_and_bad_ones_are_named() {
        let text = r#"
            socket_group = 0
            [[allow]]
            users = ["root", 4242, "*"]
            groups = [0]
            register = ["kv.*"]
            call = ["*"]
            [[allow]]
            peers = ["east"]
            call = ["kv.get"]
        "#;
        let f: FileAccess = toml::from_str(text).unwrap();
        let mut a = AccessSettings::default();
        f.overlay(&mut a).unwrap();
        assert_eq!(a.socket_group, Some(0));
        assert_eq!(a.rules.len(), 2);
        assert_eq!(a.rules[0].users, [0, 4242]);
        assert!(a.rules[0].any_user);
        assert_eq!(a.rules[0].groups[0].gid, 0);
        assert_eq!(a.rules[1].peers, ["east"]);
        for (bad, why) in [
            ("[[allow]]\ncall = [\"x\"]", "exactly one kind"),
            (
                "[[allow]]\nusers = [0]\npeers = [\"e\"]\ncall = [\"x\"]",
                "exactly one kind",
            ),
            (
                "[[allow]]\npeers = [\"e\"]\nregister = [\"x\"]",
                "cannot register",
            ),
            ("[[allow]]\nusers = [0]", "allows nothing"),
            (
                "[[allow]]\nusers = [\"no-such-user-rpcd\"]\ncall = [\"x\"]",
                "no user",
            ),
        ] {
            let f: FileAccess = toml::from_str(bad).unwrap();
            let e = f.overlay(&mut AccessSettings::default()).unwrap_err();
            assert!(
                e.contains(why) && e.contains("access.allow[0]"),
                "{bad}: {e}"
            );
        }
    }
}
