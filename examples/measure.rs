//! Runs a command and reports its wall time, CPU time and peak RSS (from
//! wait4's rusage), and rows/s and CPU µs per row when `--rows N` is given.
//! A small stand-in for `/usr/bin/time -v`, which a fresh machine may lack.
//!
//! ```text
//! measure [--rows N] -- COMMAND ARGS...
//! ```

use std::process::Command;
use std::time::Instant;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut rows: Option<f64> = None;
    if args.first().map(String::as_str) == Some("--rows") {
        rows = args.get(1).and_then(|v| v.parse().ok());
        args.drain(..2);
    }
    if args.first().map(String::as_str) == Some("--") {
        args.remove(0);
    }
    let Some((prog, rest)) = args.split_first() else {
        eprintln!("usage: measure [--rows N] -- COMMAND ARGS...");
        std::process::exit(2);
    };
    let start = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let child = Command::new(prog).args(rest).spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let wall = start.elapsed().as_secs_f64();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let user = tv(usage.ru_utime);
    let sys = tv(usage.ru_stime);
    let rss_mib = usage.ru_maxrss as f64 / 1024.0;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    println!("exit code:  {code}");
    println!("wall:       {wall:.3} s");
    println!(
        "cpu:        {:.3} s (user {user:.3} + sys {sys:.3})",
        user + sys
    );
    println!("peak RSS:   {rss_mib:.1} MiB");
    if let Some(n) = rows {
        println!("throughput: {:.0} rows/s", n / wall);
        println!("cpu/row:    {:.2} µs", (user + sys) * 1e6 / n);
    }
}
