//! The daemon process's figures for `/metrics`, read from `/proc` on the
//! metrics thread at each scrape (never on the event loop).

use std::time::Duration;

use crate::metrics::exposition::Process;

/// This process's figures, or `None` where `/proc` cannot be read (then the
/// scrape goes without them).
pub fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let ticks = sysconf(nix::unistd::SysconfVar::CLK_TCK)?;
    let page = sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    parse(&stat, &boot, &limits, ticks, page, open_fds)
}

fn sysconf(var: nix::unistd::SysconfVar) -> Option<u64> {
    nix::unistd::sysconf(var)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v > 0)
}

/// The figures from the text of `/proc/self/stat`, `/proc/stat` and
/// `/proc/self/limits` (proc(5)), clock ticks per second and the page size.
fn parse(
    stat: &str,
    boot: &str,
    limits: &str,
    ticks: u64,
    page: u64,
    open_fds: u64,
) -> Option<Process> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: the fields that follow start after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime) = (field(14)?, field(15)?);
    let start_ticks = field(22)?;
    let (vsize, rss_pages) = (field(23)?, field(24)?);
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|soft| soft.parse().ok());
    let secs = |t: u64| Duration::from_secs_f64(t as f64 / ticks as f64).as_secs_f64();
    Some(Process {
        resident_memory_bytes: rss_pages.saturating_mul(page),
        virtual_memory_bytes: vsize,
        cpu_seconds: secs(utime + stime),
        open_fds,
        max_fds,
        start_time_seconds: btime as f64 + secs(start_ticks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let stat = "4242 (rpcd (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    3 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let p = parse(stat, boot, limits, 100, 4096, 7).expect("parses");
        assert_eq!(p.resident_memory_bytes, 2560 * 4096);
        assert_eq!(p.virtual_memory_bytes, 104_857_600);
        assert!((p.cpu_seconds - 3.0).abs() < 1e-9, "{p:?}");
        assert!(
            (p.start_time_seconds - 1_700_000_123.45).abs() < 1e-6,
            "{p:?}"
        );
        assert_eq!((p.open_fds, p.max_fds), (7, Some(1024)));
        assert_eq!(parse("garbage", boot, limits, 100, 4096, 1), None);
    }

    #[test]
    fn reads_this_process() {
        let p = read().expect("/proc is readable");
        assert!(p.resident_memory_bytes > 0 && p.open_fds > 0, "{p:?}");
    }
}
