//! Raising the soft open-file limit to the hard limit, through the `rlimit` crate (the
//! crate is `#![forbid(unsafe_code)]`).

use rlimit::Resource;

/// Open-file limits after raising: (soft, hard).
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = Resource::NOFILE.get()?;
    if soft < hard {
        // Raising soft up to hard needs no privilege.
        Resource::NOFILE.set(hard, hard)?;
    }
    Resource::NOFILE.get()
}

#[cfg(test)]
mod tests {
    #[test]
    fn soft_limit_reaches_hard_limit() {
        let (soft, hard) = super::raise_nofile().unwrap();
        assert_eq!(soft, hard);
    }
}
