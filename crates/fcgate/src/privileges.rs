//! Dropping root after binding (`user`, `group`; nginx's `user` directive). Started as root,
//! fcgate binds its listener (port 80) and opens the access log file (so logs may live in
//! root-owned directories) as root, then switches to the configured group and user for good:
//! supplementary groups, group, user, in that order, and refuses to run if root could still be
//! regained. This module owns the name lookups (at load time, so `fcgate check` reports an
//! unknown name) and the switch; `lib.rs` decides when it happens.
//!
//! glibc's `setgroups`, `setgid` and `setuid` change every thread of the process (the kernel's
//! calls are per thread; glibc has each thread make the same call), so tokio's worker and
//! blocking threads, already running, switch too: `tests/cli.rs` reads each thread's ids.
//!
//! `lib.rs` switches between `BoundGateway::bind` (listeners bound, access log open) and
//! `serve`, so no connection is ever accepted as root.
//!
//! The demo app never runs with `user`: `user` is file-only, and a config file without an
//! upstream is refused, so the gateway never needs the demo app's root-only socket directory.

use std::ffi::CString;

use nix::errno::Errno;
use nix::unistd::{
    getegid, geteuid, getgid, getgrouplist, getuid, setgid, setgroups, setuid, Gid, Group, Uid,
    User,
};

use crate::config::ConfigError;

/// The account fcgate runs as after binding, looked up when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// `user`, as written.
    pub user: String,
    /// Its user id; never 0.
    pub uid: u32,
    /// `group`, else the user's primary group.
    pub gid: u32,
    /// The supplementary groups: `gid` and every group listing the user as a member (what
    /// `initgroups` would set, resolved now so no lookup happens while switching).
    pub groups: Vec<u32>,
}

impl RunAs {
    /// Resolves `user` and `group` through the system's user and group databases; `None` when
    /// `user` is unset. Errors name the key.
    pub(crate) fn look_up(
        user: Option<&str>,
        group: Option<&str>,
    ) -> Result<Option<RunAs>, ConfigError> {
        let Some(user) = user else {
            if group.is_some() {
                return Err(ConfigError::invalid(
                    "group",
                    "needs `user`: fcgate switches group only when it switches user",
                ));
            }
            return Ok(None);
        };
        let account = match User::from_name(user) {
            Ok(Some(account)) => account,
            Ok(None) => {
                return Err(ConfigError::invalid(
                    "user",
                    format!("there is no user `{user}` on this system"),
                ))
            }
            Err(errno) => {
                return Err(ConfigError::invalid(
                    "user",
                    format!("cannot look up `{user}`: {}", errno.desc()),
                ))
            }
        };
        if account.uid.is_root() {
            return Err(ConfigError::invalid(
                "user",
                format!("`{user}` is root; name the unprivileged account fcgate should run as"),
            ));
        }
        let gid = match group {
            None => account.gid,
            Some(group) => match Group::from_name(group) {
                Ok(Some(found)) => found.gid,
                Ok(None) => {
                    return Err(ConfigError::invalid(
                        "group",
                        format!("there is no group `{group}` on this system"),
                    ))
                }
                Err(errno) => {
                    return Err(ConfigError::invalid(
                        "group",
                        format!("cannot look up `{group}`: {}", errno.desc()),
                    ))
                }
            },
        };
        let groups = CString::new(account.name.as_str())
            .map_err(|_| Errno::EINVAL)
            .and_then(|name| getgrouplist(&name, gid))
            .map_err(|errno| {
                ConfigError::invalid(
                    "user",
                    format!("cannot list the groups of `{user}`: {}", errno.desc()),
                )
            })?;
        Ok(Some(RunAs {
            user: user.to_owned(),
            uid: account.uid.as_raw(),
            gid: gid.as_raw(),
            groups: groups.into_iter().map(Gid::as_raw).collect(),
        }))
    }
}

/// Why fcgate cannot run as the configured user.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Not root, and not already that user.
    #[error(
        "user = \"{user}\": fcgate runs as uid {uid}, not as {user}, and only root can switch \
         users; start it as root or as {user}, or remove `user` from the config"
    )]
    NotRoot {
        /// The configured user.
        user: String,
        /// Who fcgate runs as.
        uid: u32,
    },
    /// A system call refused.
    #[error("switching to user {user}: {call} failed: {}", errno.desc())]
    Switch {
        /// The configured user.
        user: String,
        /// `setgroups`, `setgid` or `setuid`.
        call: &'static str,
        /// Why.
        errno: Errno,
    },
    /// The switch reported success, yet root is still within reach.
    #[error(
        "after switching to user {user}, fcgate could still become root again; refusing to run"
    )]
    RootRegainable {
        /// The configured user.
        user: String,
    },
}

/// With `user` set: as root, switches to it for good; as that user already, carries on; as
/// anyone else, fails. Without `user`, does nothing.
pub fn drop_root(run_as: Option<&RunAs>) -> Result<(), PrivilegeError> {
    let Some(run_as) = run_as else {
        return Ok(());
    };
    let (uid, gid) = (Uid::from_raw(run_as.uid), Gid::from_raw(run_as.gid));
    if !geteuid().is_root() {
        if getuid() == uid && geteuid() == uid {
            tracing::info!(user = run_as.user, "already running as the configured user");
            return Ok(());
        }
        return Err(PrivilegeError::NotRoot {
            user: run_as.user.clone(),
            uid: geteuid().as_raw(),
        });
    }
    let failed = |call, errno| PrivilegeError::Switch {
        user: run_as.user.clone(),
        call,
        errno,
    };
    // Groups first: once the user id is no longer root, the group ids can no longer change.
    let groups: Vec<Gid> = run_as.groups.iter().copied().map(Gid::from_raw).collect();
    setgroups(&groups).map_err(|errno| failed("setgroups", errno))?;
    setgid(gid).map_err(|errno| failed("setgid", errno))?;
    setuid(uid).map_err(|errno| failed("setuid", errno))?;
    let switched = getuid() == uid && geteuid() == uid && getgid() == gid && getegid() == gid;
    if !switched || setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::RootRegainable {
            user: run_as.user.clone(),
        });
    }
    tracing::info!(
        user = run_as.user,
        uid = run_as.uid,
        gid = run_as.gid,
        "switched from root to the configured user"
    );
    Ok(())
}
