//! The open-file limit: raised as far as the hard limit allows, and a run kept within it.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors an SSH host holds for the whole run: its session's socket and the clone kept to
/// cut it (sessions are kept open and reused from step to step).
const PER_SESSION: u64 = 2;
/// Descriptors a command being run holds: a local command's pipes.
const PER_COMMAND: u64 = 3;
/// Descriptors capstan holds besides its hosts: the journal and its WAL, stdio, the runtime.
const RESERVED: u64 = 64;
/// What "no hard limit" is taken as: the kernel's usual nr_open.
const UNLIMITED: u64 = 1 << 20;

/// The limit on open files after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft limit on open files to the hard limit (a fan-out over hundreds of hosts needs
/// a socket each, more than the usual 1,024) and returns the limit now in force.
pub fn raise() -> FdLimit {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let hard = maximum.unwrap_or(UNLIMITED);
    let soft = current.unwrap_or(UNLIMITED);
    if soft < hard {
        let want = Rlimit {
            current: Some(hard),
            maximum,
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            return FdLimit { soft: hard, hard };
        }
    }
    FdLimit { soft, hard }
}

/// What fits in `limit` for a run over `ssh_hosts` SSH hosts at `asked` hosts at once.
#[derive(Debug, PartialEq, Eq)]
pub enum Fit {
    /// As asked.
    Asked,
    /// Fewer hosts at once: the parallelism that fits, and the sentence that says why.
    Fewer(usize, String),
    /// Not even one host at a time leaves room for a session to every host: the sentence.
    NoRoom(String),
}

/// Whether a session to each of `ssh_hosts` hosts and `asked` commands at once fit in `limit`
/// (past it, a host would fail with "too many open files" in the middle of the run).
pub fn fit(asked: usize, ssh_hosts: usize, limit: FdLimit) -> Fit {
    let sessions = ssh_hosts as u64 * PER_SESSION + RESERVED;
    let room = limit.soft.saturating_sub(sessions);
    let raise = "raise the limit with `ulimit -n`, or LimitNOFILE= in a systemd unit";
    if room < PER_COMMAND {
        return Fit::NoRoom(format!(
            "a session to each of the {ssh_hosts} SSH hosts needs about {sessions} open files, \
             but this process may open {} (hard limit {}): {raise}",
            limit.soft, limit.hard
        ));
    }
    let fits = (room / PER_COMMAND) as usize;
    if asked <= fits {
        return Fit::Asked;
    }
    Fit::Fewer(
        fits,
        format!(
            "--parallelism {asked} over {ssh_hosts} SSH hosts needs about {} open files, but \
             this process may open {} (hard limit {}): working on at most {fits} hosts at once \
             ({raise})",
            sessions + asked as u64 * PER_COMMAND,
            limit.soft,
            limit.hard
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallelism_is_kept_within_the_limit_and_says_why() {
        let small = FdLimit {
            soft: 1024,
            hard: 1024,
        };
        assert_eq!(fit(100, 100, small), Fit::Asked);
        // 300 sessions hold 664 files; 360 are left, 120 commands at once.
        let Fit::Fewer(n, why) = fit(300, 300, small) else {
            panic!("300 hosts at once fit in 1024 files");
        };
        assert_eq!(n, 120);
        assert!(
            why.contains("--parallelism 300") && why.contains("1024"),
            "{why}"
        );
        let Fit::NoRoom(why) = fit(50, 500, small) else {
            panic!("500 sessions fit in 1024 files");
        };
        assert!(
            why.contains("500 SSH hosts") && why.contains("ulimit -n"),
            "{why}"
        );
        let big = FdLimit {
            soft: 20000,
            hard: 20000,
        };
        assert_eq!(fit(500, 500, big), Fit::Asked);
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let l = raise();
        assert_eq!(l.soft, l.hard, "{l:?}");
        assert_eq!(raise(), l);
    }
}
