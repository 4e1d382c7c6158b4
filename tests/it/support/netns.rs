//! A network namespace a test creates (`ip netns add`, loopback up), removed on drop even
//! when an assertion fails; and whether this machine can run such tests (root, `nft`,
//! `curl`; a skip with a message otherwise, a failure with `PORTCULLIS_REQUIRE_NFT=1`).

use std::process::{Command, Output};

/// A namespace named `<prefix>-<pid>` (a stale one of that name is removed first).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(prefix: &str) -> Netns {
        let name = format!("{prefix}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success(), "ip netns add");
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `args` run inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.name]).args(args).output().unwrap()
    }

    /// [`Netns::exec`] that must succeed; its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Whether root, `nft` and `curl` are here for `what`; otherwise the skip (or CI failure).
pub fn can_run(what: &str) -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let nft = Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success());
    let curl = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if root && nft && curl {
        return true;
    }
    let why = format!("{what} needs root, nft and curl (root: {root}, nft: {nft}, curl: {curl})");
    super::external::missing("NFT", &why);
    false
}
