//! Which homeservers' users are full-access (`LIVEKIT_FULL_ACCESS_HOMESERVERS`, spec §3.1), and which of
//! them the operator named, which is what the SSRF guard trusts.

use crate::contract::FULL_ACCESS_WILDCARD;

/// Which homeservers' users may create rooms and delegate (§3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FullAccess {
    /// The list was exactly `*`.
    Everyone,
    /// Exact, case-sensitive server names. May be empty (`" , "`): then nobody is full-access.
    Only(Vec<String>),
}

/// The entries of a list of server names as the reference splits `LIVEKIT_FULL_ACCESS_HOMESERVERS`:
/// commas become whitespace, then split on whitespace.
pub(crate) fn server_name_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

impl FullAccess {
    /// Parses the variable as the reference does (see [`server_name_list`]); `*` is a wildcard only as
    /// the sole entry.
    pub fn parse(raw: &str) -> Self {
        let entries: Vec<String> = server_name_list(raw).map(str::to_owned).collect();
        if entries.len() == 1 && entries[0] == FULL_ACCESS_WILDCARD {
            Self::Everyone
        } else {
            Self::Only(entries)
        }
    }

    /// Whether users of `server_name` are full-access.
    pub fn allows(&self, server_name: &str) -> bool {
        match self {
            Self::Everyone => true,
            Self::Only(list) => list.iter().any(|s| s == server_name),
        }
    }

    /// Whether the operator named `server_name` explicitly, which is what makes it trusted by the SSRF
    /// guard. The wildcard grants full access to everyone but trusts no one: with `*`, any client could
    /// otherwise point the service at an internal address by naming it as its homeserver.
    pub fn names(&self, server_name: &str) -> bool {
        match self {
            Self::Everyone => false,
            Self::Only(list) => list.iter().any(|s| s == server_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_access_parsing() {
        use FullAccess::*;
        let only = |v: &[&str]| Only(v.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(FullAccess::parse("*"), Everyone);
        assert_eq!(FullAccess::parse(" * , "), Everyone);
        assert_eq!(
            FullAccess::parse("*,example.com"),
            only(&["*", "example.com"])
        );
        assert_eq!(FullAccess::parse(" , "), only(&[]));
        assert_eq!(
            FullAccess::parse("a.com,b.com  c.com\td.com,,"),
            only(&["a.com", "b.com", "c.com", "d.com"])
        );
        let list = FullAccess::parse("example.com,matrix.example.com:8448");
        assert!(list.allows("example.com"));
        assert!(list.allows("matrix.example.com:8448"));
        assert!(!list.allows("aexample.com"));
        assert!(!list.allows("Example.com"));
        assert!(!list.allows("matrix.example.com"));
        assert!(Everyone.allows("anything"));
        assert!(!only(&[]).allows(""));
        // Trust (no SSRF guard) only for names the operator wrote down, never through the wildcard.
        assert!(list.names("example.com"));
        assert!(!list.names("other.com"));
        assert!(!Everyone.names("anything"));
        // `*` among others is a literal name.
        assert!(!FullAccess::parse("*,example.com").allows("other.com"));
    }
}
