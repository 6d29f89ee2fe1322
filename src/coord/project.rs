//! The project a reservation is scoped to: the git top-level of a directory, else the
//! directory itself.

use std::path::{Path, PathBuf};

/// The project root of `dir`: the nearest ancestor (or `dir` itself) holding `.git` (a
/// directory, or a file as in a linked worktree or submodule), else `dir`; canonical (no
/// symlinks, no `..`), so two sessions in one checkout name it the same way.
///
/// A linked worktree (`git worktree add`: `.git` is a file whose `gitdir:` points into
/// `<main>/.git/worktrees/<name>`) belongs to its main work tree `<main>`: the usual
/// one-worktree-per-agent setup shares one project, so a reservation made in one worktree
/// is seen from every other. A submodule (`gitdir: …/.git/modules/…`), or a worktree of
/// a repository without a main work tree (bare, or a separate git dir), stays its own
/// project.
///
/// # Errors
/// The I/O error of canonicalizing `dir` (it does not exist, or cannot be read).
pub fn root(dir: &Path) -> std::io::Result<PathBuf> {
    let dir = dir.canonicalize()?;
    let Some(top) = dir.ancestors().find(|d| d.join(".git").exists()) else {
        return Ok(dir);
    };
    let git = top.join(".git");
    if git.is_file()
        && let Some(main) = worktree_main(top, &git)
    {
        return Ok(main);
    }
    Ok(top.to_path_buf())
}

/// The main work tree of the linked worktree `top` whose `.git` file is `git_file`, or
/// `None` when it is not one (a submodule, a worktree of a bare repository, an unreadable
/// or odd `.git` file).
fn worktree_main(top: &Path, git_file: &Path) -> Option<PathBuf> {
    // A `.git` file is one short line; anything long is not one.
    let meta = std::fs::metadata(git_file).ok()?;
    if meta.len() > 64 * 1024 {
        return None;
    }
    let text = std::fs::read_to_string(git_file).ok()?;
    let gitdir = text.lines().find_map(|l| l.strip_prefix("gitdir:"))?.trim();
    // A relative gitdir (`git worktree add --relative-paths`) is relative to the worktree.
    let gitdir = top.join(gitdir).canonicalize().ok()?;
    let worktrees = gitdir.parent()?;
    if worktrees.file_name()? != "worktrees" {
        return None;
    }
    let common = worktrees.parent()?;
    if common.file_name()? != ".git" || !common.is_dir() {
        return None;
    }
    let main = common.parent()?;
    // The main work tree's own `.git` must be that directory (not a submodule's modules
    // dir that happens to be named so).
    (main.join(".git").canonicalize().ok()? == common).then(|| main.to_path_buf())
}

/// `path` made absolute against `cwd` with `.` and `..` resolved lexically (`a/./b`,
/// `a/x/../b`), without reading the file system.
fn cleaned(cwd: &Path, path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    clean
}

/// `dir` made absolute without reading it: relative to `cwd`, `.` and `..` resolved
/// lexically, and the longest prefix that still exists canonicalized (so a deleted
/// checkout under a symlinked directory is named as it was recorded).
pub fn lexical(cwd: &Path, dir: &Path) -> PathBuf {
    let clean = cleaned(cwd, dir);
    for base in clean.ancestors() {
        if let Ok(canon) = base.canonicalize()
            && let Ok(rest) = clean.strip_prefix(base)
        {
            return if rest.as_os_str().is_empty() {
                canon
            } else {
                canon.join(rest)
            };
        }
    }
    clean
}

/// A path given relative to `cwd` (or absolute) as a path relative to `project`, with `/`
/// separators; `None` when it lies outside the project.
pub fn relative(project: &Path, cwd: &Path, path: &Path) -> Option<String> {
    // Symlinks are the caller's business.
    let clean = cleaned(cwd, path);
    let rel = clean.strip_prefix(project).ok()?;
    let s = rel.to_str()?.to_string();
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_git_top_level_is_the_project() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(top.join(".git")).unwrap();
        std::fs::create_dir_all(top.join("src/store")).unwrap();
        assert_eq!(root(&top.join("src/store")).unwrap(), top);
        let plain = tempfile::tempdir().unwrap();
        assert_eq!(
            root(plain.path()).unwrap(),
            plain.path().canonicalize().unwrap()
        );
        assert!(root(&top.join("missing")).is_err());
    }

    #[test]
    fn a_linked_worktree_is_its_main_checkouts_project() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().canonicalize().unwrap();
        let main = base.join("main");
        std::fs::create_dir_all(main.join(".git/worktrees/wt")).unwrap();
        std::fs::create_dir_all(base.join("wt/src")).unwrap();
        let gitdir = main.join(".git/worktrees/wt");
        std::fs::write(
            base.join("wt/.git"),
            format!("gitdir: {}\n", gitdir.display()),
        )
        .unwrap();
        assert_eq!(root(&base.join("wt/src")).unwrap(), main);
        // Relative gitdir, as `git worktree add --relative-paths` writes it.
        std::fs::write(base.join("wt/.git"), "gitdir: ../main/.git/worktrees/wt\n").unwrap();
        assert_eq!(root(&base.join("wt")).unwrap(), main);
        // A submodule, and a `.git` file that is not a worktree's, stay their own.
        std::fs::create_dir_all(main.join(".git/modules/sub")).unwrap();
        std::fs::create_dir_all(main.join("sub")).unwrap();
        std::fs::write(main.join("sub/.git"), "gitdir: ../.git/modules/sub\n").unwrap();
        assert_eq!(root(&main.join("sub")).unwrap(), main.join("sub"));
        std::fs::write(base.join("wt/.git"), "nonsense").unwrap();
        assert_eq!(root(&base.join("wt")).unwrap(), base.join("wt"));
    }

    #[test]
    fn missing_directories_are_named_lexically() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().canonicalize().unwrap();
        assert_eq!(
            lexical(&base, Path::new("gone/./x/../y")),
            base.join("gone/y")
        );
        assert_eq!(lexical(Path::new("/"), &base), base);
    }

    #[test]
    fn paths_become_project_relative() {
        let p = Path::new("/r");
        assert_eq!(
            relative(p, Path::new("/r/src"), Path::new("a.rs")).as_deref(),
            Some("src/a.rs")
        );
        assert_eq!(
            relative(p, Path::new("/r/src"), Path::new("../b/./c")).as_deref(),
            Some("b/c")
        );
        assert_eq!(relative(p, Path::new("/r"), Path::new("/etc/passwd")), None);
        assert_eq!(relative(p, Path::new("/r"), Path::new("../x")), None);
    }
}
