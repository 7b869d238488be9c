//! "The path the server was started from" (docs/protocol.md §11): `argv[0]`
//! made absolute at start-up, the way a shell found it, so that a hand-over
//! starts whatever binary is at that path now. `/proc/self/exe` would name
//! the binary this process runs, which a deploy has just replaced (and, once
//! unlinked, shows as `... (deleted)`).

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `argv0` as an absolute path: joined to `cwd` when it has a slash (as
/// `execve` would read it), otherwise the first executable file of that name
/// in `path` (`PATH`; an empty entry is the current directory, as in POSIX
/// shells). `None` when it cannot be found.
pub fn resolve(argv0: &OsStr, cwd: &Path, path: Option<&OsStr>) -> Option<PathBuf> {
    if argv0.is_empty() {
        return None;
    }
    let p = Path::new(argv0);
    if argv0.as_encoded_bytes().contains(&b'/') {
        return Some(if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        });
    }
    for dir in std::env::split_paths(path?) {
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else if dir.is_absolute() {
            dir
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(p);
        if is_executable(&candidate) {
            return Some(candidate);
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How this process was started, captured first thing in `main`: what a
/// hand-over starts again.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The resolved `argv[0]`; `None` when it could not be resolved (the
    /// hand-over then refuses, with a log line saying why).
    pub exe: Option<PathBuf>,
    /// As typed: `argv[0]` (for the log) ...
    pub argv0: OsString,
    /// ... and the arguments after it, passed on unchanged.
    pub args: Vec<OsString>,
}

impl Invocation {
    pub fn capture() -> Invocation {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().unwrap_or_default();
        let args: Vec<OsString> = argv.collect();
        let exe = std::env::current_dir()
            .ok()
            .and_then(|cwd| resolve(&argv0, &cwd, std::env::var_os("PATH").as_deref()));
        Invocation { exe, argv0, args }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bistream-exe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn touch(p: &Path, mode: u32) {
        std::fs::write(p, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn paths_with_a_slash_are_made_absolute_not_searched() {
        let cwd = Path::new("/srv/app");
        assert_eq!(
            resolve(OsStr::new("/usr/local/bin/bistream"), cwd, None),
            Some(PathBuf::from("/usr/local/bin/bistream"))
        );
        assert_eq!(
            resolve(
                OsStr::new("./target/bistream"),
                cwd,
                Some(OsStr::new("/bin"))
            ),
            Some(PathBuf::from("/srv/app/./target/bistream"))
        );
        assert_eq!(
            resolve(OsStr::new("bin/bistream"), cwd, None),
            Some(PathBuf::from("/srv/app/bin/bistream"))
        );
        assert_eq!(resolve(OsStr::new(""), cwd, None), None);
    }

    #[test]
    fn bare_names_are_searched_in_path_like_a_shell() {
        let d = temp("path");
        let (a, b, here) = (d.join("a"), d.join("b"), d.join("cwd"));
        for x in [&a, &b, &here] {
            std::fs::create_dir_all(x).unwrap();
        }
        // Not executable in a: skipped; executable in b: found.
        touch(&a.join("bistream"), 0o644);
        touch(&b.join("bistream"), 0o755);
        touch(&here.join("local-only"), 0o755);
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(
            resolve(OsStr::new("bistream"), &here, Some(&path)),
            Some(b.join("bistream"))
        );
        assert_eq!(resolve(OsStr::new("local-only"), &here, Some(&path)), None);
        // An empty PATH entry is the current directory.
        let with_cwd = std::env::join_paths([a.as_path(), Path::new("")]).unwrap();
        assert_eq!(
            resolve(OsStr::new("local-only"), &here, Some(&with_cwd)),
            Some(here.join("local-only"))
        );
        assert_eq!(resolve(OsStr::new("bistream"), &here, None), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
