//! The open-file limit: raised as far as the hard limit allows, and the parallelism kept within it.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors one host holds while it is worked on: its SSH socket and the clone kept to cut
/// it, or a local command's pipes.
const PER_HOST: u64 = 3;
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

/// The parallelism that fits in `limit`: `asked`, or fewer with the sentence that says why (a
/// host past the limit would fail with "too many open files" instead).
pub fn fit(asked: usize, limit: FdLimit) -> (usize, Option<String>) {
    let fits = (limit.soft.saturating_sub(RESERVED) / PER_HOST).max(1);
    if asked as u64 <= fits {
        return (asked, None);
    }
    let fits = fits as usize;
    let need = asked as u64 * PER_HOST + RESERVED;
    (
        fits,
        Some(format!(
            "--parallelism {asked} needs about {need} open files, but this process may open {} \
             (hard limit {}): working on at most {fits} hosts at once (raise the limit with \
             `ulimit -n`, or LimitNOFILE= in a systemd unit)",
            limit.soft, limit.hard
        )),
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
        assert_eq!(fit(200, small), (200, None));
        let (n, why) = fit(500, small);
        assert_eq!(n, 320);
        let why = why.unwrap();
        assert!(
            why.contains("--parallelism 500") && why.contains("1024"),
            "{why}"
        );
        assert_eq!(
            fit(
                500,
                FdLimit {
                    soft: 20000,
                    hard: 20000
                }
            ),
            (500, None)
        );
        assert_eq!(fit(9, FdLimit { soft: 10, hard: 10 }).0, 1);
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let l = raise();
        assert_eq!(l.soft, l.hard, "{l:?}");
        assert_eq!(raise(), l);
    }
}
