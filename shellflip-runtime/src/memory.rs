//! How much memory a restart's state handover may take: the lower of the
//! system's `MemAvailable` and what the service's memory cgroup leaves
//! (v2 `memory.max`, v1 `memory.limit_in_bytes`; its own cgroup and every
//! ancestor up to the mount's root, the page cache it could reclaim counted
//! as free). A state whose envelope would not fit is refused before it is
//! sent, rather than the kernel's OOM killer ending a generation halfway
//! through the handover. And the heap advice a new generation starts with:
//! huge pages behind glibc's heap when the state is large.

use std::path::{Path, PathBuf};

/// Memory available, and where the figure comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Available {
    /// Bytes.
    pub bytes: u64,
    /// "MemAvailable" or the cgroup's directory and limit file.
    pub source: String,
}

/// `bytes` for people: "123.4 MiB".
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// The memory this process may still take, if the system says.
pub(crate) fn available() -> Option<Available> {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let system = read(Path::new("/proc/meminfo"))
        .as_deref()
        .and_then(mem_available)
        .map(|bytes| Available {
            bytes,
            source: "MemAvailable in /proc/meminfo".to_owned(),
        });
    let (Some(cgroups), Some(mounts)) = (
        read(Path::new("/proc/self/cgroup")),
        read(Path::new("/proc/self/mountinfo")),
    ) else {
        return system;
    };
    memory_cgroup_dirs(&cgroups, &mounts)
        .into_iter()
        .filter_map(|(dir, version)| cgroup_headroom(&dir, version, read))
        .chain(system)
        .min_by_key(|available| available.bytes)
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The cgroup versions, by their files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The directories of this process's memory cgroup and of each of its
/// ancestors within the mount, from `/proc/self/cgroup` and
/// `/proc/self/mountinfo`.
fn memory_cgroup_dirs(cgroups: &str, mountinfo: &str) -> Vec<(PathBuf, Version)> {
    let mut dirs = Vec::new();
    for mount in mountinfo.lines() {
        let Some((left, right)) = mount.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        let options = right.get(2).copied().unwrap_or("");
        let version = match *fstype {
            "cgroup2" => Version::V2,
            "cgroup" if options.split(',').any(|o| o == "memory") => Version::V1,
            _ => continue,
        };
        let Some(path) = cgroups.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ours = match version {
                Version::V2 => controllers.is_empty(),
                Version::V1 => controllers.split(',').any(|c| c == "memory"),
            };
            ours.then_some(path)
        }) else {
            continue;
        };
        // The mount shows the hierarchy from `root` down (a container's
        // bind mount of its own cgroup): the path below it.
        let Some(below) = path.strip_prefix(root.trim_end_matches('/')) else {
            continue;
        };
        let point = Path::new(point);
        let mut dir = point.join(below.trim_start_matches('/'));
        loop {
            dirs.push((dir.clone(), version));
            if dir == point || !dir.pop() || !dir.starts_with(point) {
                break;
            }
        }
    }
    dirs
}

/// What the cgroup at `dir` leaves: its limit less its usage, plus the
/// inactive page cache it would reclaim first. `None` without a limit.
fn cgroup_headroom(
    dir: &Path,
    version: Version,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<Available> {
    let (limit_file, usage_file, inactive_key) = match version {
        Version::V2 => ("memory.max", "memory.current", "inactive_file"),
        Version::V1 => (
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "total_inactive_file",
        ),
    };
    let number = |file: &str| read(&dir.join(file))?.trim().parse::<u64>().ok();
    // "max" (v2) does not parse; v1 writes a page-rounded i64::MAX.
    let limit = number(limit_file).filter(|&limit| limit < 1 << 62)?;
    let usage = number(usage_file)?;
    let inactive = read(&dir.join("memory.stat"))
        .and_then(|stat| {
            stat.lines().find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == inactive_key).then(|| value.trim().parse::<u64>().ok())?
            })
        })
        .unwrap_or(0);
    Some(Available {
        bytes: limit.saturating_sub(usage) + inactive.min(usage),
        source: format!("{}/{limit_file} = {}", dir.display(), mib(limit)),
    })
}

/// The glibc tunable that has `malloc` ask for transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`) behind its heap and its large blocks.
const HUGE_HEAP: &str = "glibc.malloc.hugetlb=1";

/// Set (to `1`) in a new generation's environment when the runtime added
/// [`HUGE_HEAP`] to its `GLIBC_TUNABLES`, so that the spawn after it knows
/// the entry is the runtime's to take back, not the service's.
pub(crate) const ENV_HUGE_HEAP_ADDED: &str = "SHELLFLIP_HUGE_HEAP_ADDED";

/// Anonymous memory (the state, mostly) from which the next generation's
/// heap goes on huge pages: below it, rounding the heap up to 2 MiB pages
/// would cost more memory than the faults it saves are worth.
pub(crate) const LARGE_HEAP_BYTES: u64 = 64 << 20;

/// Whether this process's anonymous resident memory (`RssAnon` of
/// `/proc/self/status`) is at least [`LARGE_HEAP_BYTES`]; `false` if the
/// system does not say.
pub(crate) fn heap_is_large() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
    kib.is_some_and(|kib| kib.saturating_mul(1024) >= LARGE_HEAP_BYTES)
}

/// The variables a new generation gets for its heap, as `(name, value)`
/// (`None`: unset): `GLIBC_TUNABLES` and [`ENV_HUGE_HEAP_ADDED`]; none
/// (every variable passed on as it is) when the inherited tunables are not
/// UTF-8, which glibc would not parse either.
///
/// A large state is encoded at each restart by walking it, while writers
/// wait; with the heap on 2 MiB pages (fewer TLB misses), a 100 MiB
/// state's encoding took half the time (docs/bench.md). So when this
/// generation's heap is large (`large_heap`), the next one gets
/// [`HUGE_HEAP`] added to the tunables it inherits. The service's own
/// choice wins: tunables that already set `glibc.malloc.hugetlb` (to `0`
/// to keep huge pages off) are passed on untouched. An entry the runtime
/// added before (`added_before`) is taken back first, so a heap that
/// shrank loses it again. Other C libraries and allocators ignore the
/// variable.
pub(crate) fn successor_heap_env(
    inherited: Option<&std::ffi::OsStr>,
    added_before: bool,
    large_heap: bool,
) -> Vec<(&'static str, Option<String>)> {
    let Some(inherited) = inherited.map_or(Some(""), std::ffi::OsStr::to_str) else {
        return Vec::new();
    };
    let mut own: Vec<&str> = inherited
        .split(':')
        .filter(|entry| !entry.is_empty())
        .collect();
    if added_before {
        if let Some(at) = own.iter().rposition(|entry| *entry == HUGE_HEAP) {
            own.remove(at);
        }
    }
    let services_choice = own
        .iter()
        .any(|entry| entry.starts_with("glibc.malloc.hugetlb="));
    let add = large_heap && !services_choice;
    if add {
        own.push(HUGE_HEAP);
    }
    vec![
        ("GLIBC_TUNABLES", (!own.is_empty()).then(|| own.join(":"))),
        (ENV_HUGE_HEAP_ADDED, add.then(|| "1".to_owned())),
    ]
}

/// [`successor_heap_env`] for this process's environment.
pub(crate) fn successor_heap_env_here(large_heap: bool) -> Vec<(&'static str, Option<String>)> {
    let inherited = std::env::var_os("GLIBC_TUNABLES");
    let added_before = std::env::var_os(ENV_HUGE_HEAP_ADDED).is_some();
    successor_heap_env(inherited.as_deref(), added_before, large_heap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsStr;

    fn heap_env(
        inherited: Option<&str>,
        added_before: bool,
        large: bool,
    ) -> (Option<String>, bool) {
        let env = successor_heap_env(inherited.map(OsStr::new), added_before, large);
        assert_eq!(env.len(), 2, "{env:?}");
        let value = |name: &str| {
            env.iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.clone())
        };
        (
            value("GLIBC_TUNABLES"),
            value(ENV_HUGE_HEAP_ADDED).is_some(),
        )
    }

    #[test]
    fn tunables_that_are_not_text_are_passed_on_untouched() {
        use std::os::unix::ffi::OsStrExt;
        let odd = OsStr::from_bytes(b"glibc.malloc.arena_max=\xff");
        assert!(successor_heap_env(Some(odd), false, true).is_empty());
        assert!(successor_heap_env(Some(odd), true, false).is_empty());
    }

    #[test]
    fn a_large_heap_gets_huge_pages_beside_the_services_own_tunables() {
        let huge = Some(HUGE_HEAP.to_owned());
        assert_eq!(heap_env(None, false, true), (huge.clone(), true));
        assert_eq!(heap_env(None, false, false), (None, false));
        assert_eq!(
            heap_env(Some("glibc.malloc.arena_max=2"), false, true),
            (Some(format!("glibc.malloc.arena_max=2:{HUGE_HEAP}")), true)
        );
        // Added once, whatever the number of restarts.
        assert_eq!(heap_env(huge.as_deref(), true, true), (huge, true));
    }

    #[test]
    fn the_services_choice_is_kept_and_the_runtimes_own_entry_taken_back() {
        for own in [
            "glibc.malloc.hugetlb=0",
            "glibc.malloc.hugetlb=1",
            "glibc.malloc.hugetlb=2",
        ] {
            assert_eq!(
                heap_env(Some(own), false, true),
                (Some(own.to_owned()), false)
            );
            assert_eq!(
                heap_env(Some(own), false, false),
                (Some(own.to_owned()), false)
            );
        }
        // The heap shrank: the runtime's entry goes, the service's stay.
        assert_eq!(heap_env(Some(HUGE_HEAP), true, false), (None, false));
        assert_eq!(
            heap_env(
                Some(&format!("glibc.malloc.arena_max=2:{HUGE_HEAP}")),
                true,
                false
            ),
            (Some("glibc.malloc.arena_max=2".to_owned()), false)
        );
        // Without the marker, the entry is the service's own.
        assert_eq!(
            heap_env(Some(HUGE_HEAP), false, false),
            (Some(HUGE_HEAP.to_owned()), false)
        );
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let meminfo = "MemTotal:       24684032 kB\nMemFree:        23350000 kB\nMemAvailable:   24100000 kB\n";
        assert_eq!(mem_available(meminfo), Some(24_100_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_cgroup_and_its_ancestors_are_found_in_both_versions() {
        let cgroups = "9:name=systemd:/\n4:memory:/app/web\n1:cpu:/\n0::/app.slice/web.service\n";
        let dirs = memory_cgroup_dirs(cgroups, HYBRID_MOUNTS);
        let expect = [
            ("/sys/fs/cgroup/memory/app/web", Version::V1),
            ("/sys/fs/cgroup/memory/app", Version::V1),
            ("/sys/fs/cgroup/memory", Version::V1),
            ("/sys/fs/cgroup/unified/app.slice/web.service", Version::V2),
            ("/sys/fs/cgroup/unified/app.slice", Version::V2),
            ("/sys/fs/cgroup/unified", Version::V2),
        ];
        let expect: Vec<_> = expect.iter().map(|(p, v)| (PathBuf::from(p), *v)).collect();
        assert_eq!(dirs, expect);
    }

    #[test]
    fn a_container_sees_its_own_cgroup_as_the_root() {
        // cgroup namespace: the path is "/", the mount's root is "/".
        let mounts = "700 690 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n";
        let dirs = memory_cgroup_dirs("0::/\n", mounts);
        assert_eq!(dirs, [(PathBuf::from("/sys/fs/cgroup"), Version::V2)]);
        // Without one, the mount's root is the container's own cgroup.
        let mounts =
            "700 690 0:30 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        let dirs = memory_cgroup_dirs("5:memory:/docker/abc\n", mounts);
        assert_eq!(
            dirs,
            [(PathBuf::from("/sys/fs/cgroup/memory"), Version::V1)]
        );
    }

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(path, text)| (PathBuf::from(path), text.to_string()))
            .collect();
        move |path: &Path| map.get(path).cloned()
    }

    #[test]
    fn headroom_is_the_limit_less_usage_plus_inactive_page_cache() {
        let read = files(&[
            ("/cg/memory.max", "1073741824\n"),
            ("/cg/memory.current", "536870912\n"),
            (
                "/cg/memory.stat",
                "anon 400000000\ninactive_file 100000000\n",
            ),
        ]);
        let headroom = cgroup_headroom(Path::new("/cg"), Version::V2, read).unwrap();
        assert_eq!(headroom.bytes, 536_870_912 + 100_000_000);
        assert_eq!(headroom.source, "/cg/memory.max = 1024.0 MiB");
        // No limit: nothing to say.
        let read = files(&[("/cg/memory.max", "max\n"), ("/cg/memory.current", "5\n")]);
        assert_eq!(cgroup_headroom(Path::new("/cg"), Version::V2, read), None);
        let read = files(&[
            ("/cg/memory.limit_in_bytes", "9223372036854771712\n"),
            ("/cg/memory.usage_in_bytes", "5\n"),
        ]);
        assert_eq!(cgroup_headroom(Path::new("/cg"), Version::V1, read), None);
        // Over the limit (usage counts cache): no headroom, not an underflow.
        let read = files(&[
            ("/cg/memory.limit_in_bytes", "100\n"),
            ("/cg/memory.usage_in_bytes", "150\n"),
        ]);
        let headroom = cgroup_headroom(Path::new("/cg"), Version::V1, read).unwrap();
        assert_eq!(headroom.bytes, 0);
    }

    #[test]
    fn this_process_has_a_figure() {
        // Every Linux has MemAvailable; a cgroup can only lower it.
        let available = available().unwrap();
        assert!(available.bytes > 0, "{available:?}");
        assert!(!available.source.is_empty());
    }
}
