//! Keeping the agent small: it runs on every machine of the fleet, and
//! users judge a fleet agent first by its resident memory (issue 21).
//!
//! Measured with `scripts/agent_footprint.py` (BENCHMARKS.md, "Agent
//! footprint"): of a dev-profile agent's 78 MiB, 26 MiB were anonymous
//! memory, almost all of it transparent huge pages. mimalloc asks for huge
//! pages on its arenas (`madvise(MADV_HUGEPAGE)`), so the first touch of
//! each 2 MiB region makes all of it resident although the agent's own heap
//! is about 3 MiB. Without THP the anonymous share fell to 3.3 MiB.

/// How many tokio worker threads an agent runs. Its work is a few HTTP
/// publishes and one small generation per tick; a worker per core of the
/// machine it observes (64 on a large host) would only add stacks and
/// per-thread allocator heaps.
pub const AGENT_WORKER_THREADS: usize = 2;

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`,
/// inherited by children). Pages faulted in afterwards are 4 KiB ones, which
/// is what a process with a few MiB of heap wants; servers with large
/// generations (proxies, TLAs, SQL nodes) keep THP.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only
    // and changes one flag of this process's memory map; no memory is
    // passed to the kernel.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thp_is_off_after_disabling() {
        // A forked child would be cleaner, but the flag only affects how
        // this test process's later page faults are backed.
        super::disable_transparent_huge_pages().unwrap();
        // SAFETY: integer-only prctl query.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }
}
