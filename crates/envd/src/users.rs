//! Users and groups read straight from /etc/passwd and /etc/group.
//!
//! envd is linked statically against glibc, where the NSS functions (`getpwnam` and friends)
//! cannot load their modules, so the files are parsed here instead.

use std::path::{Path, PathBuf};

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unknown user: {name}")]
    Unknown { name: String },
}

/// Snapshot of the guest's user and group databases.
#[derive(Debug, Default, Clone)]
pub struct UserDb {
    users: Vec<User>,
    groups: Vec<Group>,
}

/// User a request runs as when it names none.
pub const DEFAULT_USER: &str = "root";

impl UserDb {
    /// Reads /etc/passwd and /etc/group; a missing or unreadable file counts as empty.
    pub fn load() -> Self {
        Self::load_from(Path::new("/etc/passwd"), Path::new("/etc/group"))
    }

    pub fn load_from(passwd: &Path, group: &Path) -> Self {
        let read = |path: &Path| match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "read user database");
                String::new()
            }
        };
        Self::parse(&read(passwd), &read(group))
    }

    pub fn parse(passwd: &str, group: &str) -> Self {
        Self {
            users: passwd.lines().filter_map(parse_passwd_line).collect(),
            groups: group.lines().filter_map(parse_group_line).collect(),
        }
    }

    /// Looks a user up by name. `root` always resolves, even on an image without /etc/passwd.
    pub fn user(&self, name: &str) -> Result<User, UserError> {
        if let Some(user) = self.users.iter().find(|user| user.name == name) {
            return Ok(user.clone());
        }
        if name == DEFAULT_USER {
            return Ok(User {
                name: DEFAULT_USER.to_owned(),
                uid: 0,
                gid: 0,
                home: PathBuf::from("/root"),
                shell: PathBuf::from("/bin/sh"),
            });
        }
        Err(UserError::Unknown {
            name: name.to_owned(),
        })
    }

    /// Looks a user up by name, treating an empty name as [`DEFAULT_USER`].
    pub fn user_or_default(&self, name: &str) -> Result<User, UserError> {
        self.user(if name.is_empty() { DEFAULT_USER } else { name })
    }

    /// Name for a uid, or the number itself when no user has it.
    pub fn user_name(&self, uid: u32) -> String {
        self.users
            .iter()
            .find(|user| user.uid == uid)
            .map_or_else(|| uid.to_string(), |user| user.name.clone())
    }

    /// Name for a gid, or the number itself when no group has it.
    pub fn group_name(&self, gid: u32) -> String {
        self.groups
            .iter()
            .find(|group| group.gid == gid)
            .map_or_else(|| gid.to_string(), |group| group.name.clone())
    }

    /// Gid of a named group, if it exists.
    pub fn group_id(&self, name: &str) -> Option<u32> {
        self.groups
            .iter()
            .find(|group| group.name == name)
            .map(|group| group.gid)
    }

    /// The user's primary group followed by every group that lists them as a member.
    pub fn group_ids_of(&self, user: &User) -> Vec<u32> {
        let mut gids = vec![user.gid];
        for group in &self.groups {
            if group.members.contains(&user.name) && !gids.contains(&group.gid) {
                gids.push(group.gid);
            }
        }
        gids
    }
}

fn is_entry(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with('#')
}

fn parse_passwd_line(line: &str) -> Option<User> {
    if !is_entry(line) {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 7 {
        return None;
    }
    Some(User {
        name: fields[0].to_owned(),
        uid: fields[2].parse().ok()?,
        gid: fields[3].parse().ok()?,
        home: PathBuf::from(fields[5]),
        shell: PathBuf::from(fields[6]),
    })
}

fn parse_group_line(line: &str) -> Option<Group> {
    if !is_entry(line) {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 4 {
        return None;
    }
    Some(Group {
        name: fields[0].to_owned(),
        gid: fields[2].parse().ok()?,
        members: fields[3]
            .split(',')
            .map(str::trim)
            .filter(|member| !member.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken:x:notanumber:1::/:/bin/sh
short:x:5
user:x:1000:1000:A User,,,:/home/user:/bin/bash
";
    const GROUP: &str = "\
root:x:0:
tty:x:5:
sudo:x:27:user,other
docker:x:998: user
user:x:1000:
bad:x:zz:
";

    #[test]
    fn parses_valid_passwd_lines_and_skips_the_rest() {
        let db = UserDb::parse(PASSWD, GROUP);
        let names: Vec<&str> = db.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["root", "daemon", "user"]);
        let user = db.user("user").unwrap();
        assert_eq!(
            user,
            User {
                name: "user".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/user".into(),
                shell: "/bin/bash".into(),
            }
        );
    }

    #[test]
    fn resolves_names_and_falls_back_to_numbers() {
        let db = UserDb::parse(PASSWD, GROUP);
        let cases = [(0, "root"), (1000, "user"), (4242, "4242")];
        for (uid, name) in cases {
            assert_eq!(db.user_name(uid), name, "uid {uid}");
        }
        let cases = [(5, "tty"), (27, "sudo"), (31337, "31337")];
        for (gid, name) in cases {
            assert_eq!(db.group_name(gid), name, "gid {gid}");
        }
        assert_eq!(db.group_id("tty"), Some(5));
        assert_eq!(db.group_id("bad"), None);
    }

    #[test]
    fn collects_supplementary_groups() {
        let db = UserDb::parse(PASSWD, GROUP);
        let user = db.user("user").unwrap();
        assert_eq!(db.group_ids_of(&user), [1000, 27, 998]);
        let root = db.user("root").unwrap();
        assert_eq!(db.group_ids_of(&root), [0]);
    }

    #[test]
    fn unknown_users_fail_but_root_always_exists() {
        let empty = UserDb::parse("", "");
        assert_eq!(empty.user_or_default("").unwrap().uid, 0);
        assert_eq!(empty.user("root").unwrap().home, PathBuf::from("/root"));
        let err = empty.user("ghost").unwrap_err();
        assert_eq!(err.to_string(), "unknown user: ghost");
    }
}
