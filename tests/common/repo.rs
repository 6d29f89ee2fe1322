//! A real git repository in a temporary directory for guard tests: one commit, no user or
//! system git config, and the relay home its hooks talk to.

use std::path::PathBuf;
use std::process::Command;

use super::{Home, Run};

/// A git repository with one commit, and the relay home its hook talks to.
pub struct Repo {
    /// The relay home its hook talks to.
    pub h: Home,
    /// The work tree.
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Repo {
        let r = Repo {
            h: Home::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        r.git_ok(&["init", "-q", "-b", "main"]);
        r.write("README", "hello\n");
        r.git_ok(&["add", "README"]);
        r.git_ok(&["commit", "-q", "--no-verify", "-m", "first"]);
        r
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// `git args…` in the repository, with relay's environment as [`Home::cmd`] sets it
    /// (the hook inherits it) and no user or system git config.
    pub fn git(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(self.dir.path())
            .env("RELAY_HOME", self.h.path())
            .env_remove("RELAY_AS")
            .env_remove("RELAY_GUARD")
            .env_remove("RELAY_STORE")
            .env_remove("RELAY_HOST")
            .env_remove("XDG_RUNTIME_DIR")
            .env("RELAY_LOG", "warn")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com");
        c
    }

    pub fn git_ok(&self, args: &[&str]) -> Run {
        let r = super::run(self.git(args), None, super::DEADLINE);
        assert_eq!(r.code, 0, "git {args:?}: {}{}", r.stdout, r.stderr);
        r
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Stages `rel` (written with `text`) and commits it, with `env` for the commit.
    pub fn commit(&self, rel: &str, text: &str, env: &[(&str, &str)]) -> Run {
        self.write(rel, text);
        self.git_ok(&["add", rel]);
        let mut c = self.git(&["commit", "-q", "-m", &format!("change {rel}")]);
        for (k, v) in env {
            c.env(k, v);
        }
        super::run(c, None, super::DEADLINE)
    }

    pub fn commits(&self) -> usize {
        self.git_ok(&["rev-list", "--count", "HEAD"])
            .stdout
            .trim()
            .parse()
            .unwrap()
    }

    /// `relay args…` run in the repository.
    pub fn relay(&self, args: &[&str]) -> Run {
        let mut c = self.h.cmd(args);
        c.current_dir(self.dir.path());
        super::run(c, None, super::DEADLINE)
    }

    pub fn relay_ok(&self, args: &[&str]) -> Run {
        let r = self.relay(args);
        assert_eq!(r.code, 0, "relay {args:?}: {}{}", r.stdout, r.stderr);
        r
    }

    pub fn install(&self) -> Run {
        self.relay_ok(&["install", "guard"])
    }

    pub fn hooks(&self) -> PathBuf {
        self.dir.path().join(".git/hooks")
    }
}
