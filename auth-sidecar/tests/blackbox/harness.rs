//! Checks of the test harness itself, so that a passing black-box test means what it says.

use crate::support::jwt::hash;

/// The hash helper reproduces the vectors of spec §4 (Go tests, MSC appendix, derived rows).
#[test]
fn hash_helper_matches_the_spec_vectors() {
    let vectors: [(&[&str], &str); 6] = [
        (
            &["!roomid:example.com", "slot1234"],
            "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc",
        ),
        (
            &["@alice:example.com", "DEVICE123", "memberABC"],
            "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU",
        ),
        (
            &["!room:example.com", "m.call#ROOM"],
            "krj2dgxw2K6EOm9he4GfQJ6JsSVWfJ8a7BkyjZcSmxs",
        ),
        (&["", ""], "Q5CD84lWulHs6QYxVSxuojxcKVcNPVcQ5AjnfgG6c3U"),
        (
            &["@user:example.com", "DEVICEID", "memberID"],
            "Ik/9kfPJBhVEfBsL/EX/p+hndA56DqN2BaNJpAlMkzQ",
        ),
        (
            &["@user:example.com", "DEVICE", "member-1"],
            "UR7alejYuNM0ORiaDQL/rfhD2K9O4CeI8ePEaOEgV88",
        ),
    ];
    for (parts, expected) in vectors {
        assert_eq!(hash(parts), expected, "{parts:?}");
    }
}
