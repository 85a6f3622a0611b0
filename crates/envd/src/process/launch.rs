//! Turns a [`Spec`] into a concrete launch plan: user, environment, working directory and the
//! executable's path, all checked before anything is forked so errors come back as clear
//! statuses.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{ProcessError, PtySize, Spec, StdinMode};
use crate::users::{User, UserDb};

/// PATH every process starts with unless the sandbox or the spec overrides it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to fork and exec one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Absolute (or cwd-relative, when the spec had a slash) path of the executable.
    pub program: PathBuf,
    /// argv[0], the command as the caller wrote it.
    pub arg0: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub credentials: Credentials,
    pub pty: Option<PtySize>,
    pub stdin: StdinMode,
}

/// Identity the process runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Launch {
    /// Resolves `spec` against the user database and the sandbox-wide environment.
    pub fn resolve(
        spec: &Spec,
        users: &UserDb,
        sandbox_env: &HashMap<String, String>,
    ) -> Result<Self, ProcessError> {
        if spec.cmd.is_empty() {
            return Err(ProcessError::EmptyCommand);
        }
        let user = users.user_or_default(spec.user.as_deref().unwrap_or_default())?;
        let cwd = working_dir(spec.cwd.as_deref(), &user)?;
        let env = environment(&user, sandbox_env, spec);
        let search_path = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
        let program = find_executable(&spec.cmd, search_path, &cwd)?;
        Ok(Self {
            program,
            arg0: spec.cmd.clone(),
            args: spec.args.clone(),
            env,
            cwd,
            credentials: Credentials {
                uid: user.uid,
                gid: user.gid,
                groups: users.group_ids_of(&user),
            },
            pty: spec.pty,
            stdin: spec.stdin,
        })
    }
}

/// Base variables, then the sandbox's, then the spec's; later layers win.
fn environment(
    user: &User,
    sandbox_env: &HashMap<String, String>,
    spec: &Spec,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let base = [
        ("PATH", DEFAULT_PATH.to_owned()),
        ("HOME", user.home.display().to_string()),
        ("USER", user.name.clone()),
        ("LOGNAME", user.name.clone()),
        ("SHELL", user.shell.display().to_string()),
        ("LANG", "C.UTF-8".to_owned()),
    ];
    for (key, value) in base {
        env.insert(key.to_owned(), value);
    }
    if spec.pty.is_some() {
        env.insert("TERM".to_owned(), "xterm-256color".to_owned());
    }
    for (key, value) in sandbox_env.iter().chain(&spec.env) {
        env.insert(key.clone(), value.clone());
    }
    env
}

/// The requested directory (relative ones resolve against home), or home itself.
///
/// An explicit directory must exist; a missing default home falls back to `/`, as login does.
fn working_dir(requested: Option<&Path>, user: &User) -> Result<PathBuf, ProcessError> {
    let Some(requested) = requested else {
        return Ok(if user.home.is_dir() {
            user.home.clone()
        } else {
            PathBuf::from("/")
        });
    };
    let path = user.home.join(requested);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Ok(_) => Err(ProcessError::CwdNotDirectory { path }),
        Err(_) => Err(ProcessError::MissingCwd { path }),
    }
}

/// Finds `cmd` like execvp would: as a path when it has a slash, else in `search_path`.
fn find_executable(cmd: &str, search_path: &str, cwd: &Path) -> Result<PathBuf, ProcessError> {
    let not_found = || ProcessError::ExecutableNotFound {
        cmd: cmd.to_owned(),
    };
    if cmd.contains('/') {
        let path = cwd.join(cmd);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(not_found())
        };
    }
    search_path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| cwd.join(dir).join(cmd))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(not_found)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> UserDb {
        UserDb::parse(
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n",
            "root:x:0:\nnogroup:x:65534:\nextra:x:42:nobody\n",
        )
    }

    fn spec(cmd: &str) -> Spec {
        Spec {
            cmd: cmd.to_owned(),
            ..Spec::default()
        }
    }

    #[test]
    fn layers_environment() {
        let user = db().user("root").unwrap();
        let sandbox = HashMap::from([
            ("A".to_owned(), "sandbox".to_owned()),
            ("B".to_owned(), "sandbox".to_owned()),
        ]);
        let mut spec = spec("sh");
        spec.env.insert("B".to_owned(), "spec".to_owned());
        spec.env.insert("LANG".to_owned(), "de_DE.UTF-8".to_owned());
        let env = environment(&user, &sandbox, &spec);
        let get = |key: &str| env.get(key).map(String::as_str);
        assert_eq!(get("A"), Some("sandbox"));
        assert_eq!(get("B"), Some("spec"));
        assert_eq!(get("LANG"), Some("de_DE.UTF-8"));
        assert_eq!(get("HOME"), Some("/root"));
        assert_eq!(get("SHELL"), Some("/bin/bash"));
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(get("TERM"), None);

        spec.pty = Some(PtySize { cols: 80, rows: 24 });
        let env = environment(&user, &sandbox, &spec);
        assert_eq!(env.get("TERM").map(String::as_str), Some("xterm-256color"));
    }

    #[test]
    fn finds_executables() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = bin.join("data");
        std::fs::write(&data, "").unwrap();

        let search = format!("/nonexistent::{}", bin.display());
        assert_eq!(find_executable("tool", &search, dir.path()).unwrap(), tool);
        assert!(matches!(
            find_executable("data", &search, dir.path()),
            Err(ProcessError::ExecutableNotFound { .. })
        ));
        assert_eq!(
            find_executable("bin/tool", "", dir.path()).unwrap(),
            dir.path().join("bin/tool")
        );
        assert_eq!(
            find_executable(tool.to_str().unwrap(), "", Path::new("/")).unwrap(),
            tool
        );
        let err = find_executable("no-such-binary", &search, dir.path()).unwrap_err();
        assert_eq!(err.to_string(), "executable not found: no-such-binary");
    }

    #[test]
    fn resolves_working_dir_and_user() {
        let db = db();
        let env = HashMap::new();
        let launch = Launch::resolve(&spec("sh"), &db, &env).unwrap();
        assert_eq!(launch.credentials.uid, 0);
        assert_eq!(launch.cwd, PathBuf::from("/root"));

        let mut nobody = spec("sh");
        nobody.user = Some("nobody".to_owned());
        let launch = Launch::resolve(&nobody, &db, &env).unwrap();
        assert_eq!(
            launch.cwd,
            PathBuf::from("/"),
            "missing home falls back to /"
        );
        assert_eq!(launch.credentials.groups, [65534, 42]);

        let mut missing = spec("sh");
        missing.cwd = Some("/definitely/not/here".into());
        let err = Launch::resolve(&missing, &db, &env).unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"), "{err}");

        let mut ghost = spec("sh");
        ghost.user = Some("ghost".to_owned());
        assert!(matches!(
            Launch::resolve(&ghost, &db, &env),
            Err(ProcessError::UnknownUser(_))
        ));
        assert!(matches!(
            Launch::resolve(&spec(""), &db, &env),
            Err(ProcessError::EmptyCommand)
        ));
    }
}
