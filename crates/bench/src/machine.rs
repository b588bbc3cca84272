//! What the run ran on, and how busy the machine was with other work meanwhile.

use std::time::Duration;

/// A description of the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs available.
    pub cores: usize,
    /// Total memory.
    pub ram: String,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads /proc.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpu,
            cores,
            ram,
            kernel,
        }
    }
}

/// Machine-wide CPU time from /proc/stat: (busy, total), in clock ticks.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// CPU time (user + system) a process has used, in clock ticks (0 if it cannot be read).
pub fn process_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Samples every two seconds, in a background thread, how many compiler processes run.
pub struct LoadSampler {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<Vec<usize>>,
}

fn compilers_running() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|comm| {
            matches!(
                comm.trim(),
                "rustc" | "cc1" | "cc1plus" | "ld" | "cargo" | "clippy-driver"
            )
        })
        .count()
}

impl LoadSampler {
    /// Starts sampling.
    pub fn start() -> LoadSampler {
        let (stop, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            loop {
                samples.push(compilers_running());
                match rx.recv_timeout(Duration::from_secs(2)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return samples,
                }
            }
        });
        LoadSampler { stop, handle }
    }

    /// Stops sampling; returns (samples with compilers running, samples, most at once).
    pub fn finish(self) -> (usize, usize, usize) {
        let _ = self.stop.send(());
        let samples = self.handle.join().unwrap_or_default();
        let busy = samples.iter().filter(|&&n| n > 0).count();
        (
            busy,
            samples.len(),
            samples.iter().copied().max().unwrap_or(0),
        )
    }
}
