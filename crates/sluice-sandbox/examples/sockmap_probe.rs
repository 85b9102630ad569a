//! `bench/sockmap`: one-way bulk throughput and whole-machine CPU per GiB of
//! a loopback relay moving bytes with `splice(2)` (what sluice's tunnels
//! use) against a kernel sockmap redirect ([`SockmapRedirect`]) and a direct
//! connection, interleaved; then how much a sender can push through each
//! relay while the receiver does not read.
//!
//! `cargo run --release -p sluice-sandbox --example sockmap_probe -- [GIB] [ROUNDS]`
//! (root). Machine CPU (`/proc/stat`) is the measure, because a sockmap
//! redirect sends from a kernel worker that no process is charged for.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, splice, FcntlArg, SpliceFFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use sluice_sandbox::sockmap::{tcp_bytes_queued, SockmapRedirect};

const CHUNK: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Splice,
    Sockmap,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Splice => "splice",
            Self::Sockmap => "sockmap",
        }
    }
}

/// client -> (a | b) -> server.
#[allow(clippy::disallowed_methods)] // a benchmark dialling its own local listeners
fn topology() -> io::Result<(TcpStream, TcpStream, TcpStream, TcpStream)> {
    let front = TcpListener::bind("127.0.0.1:0")?;
    let back = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(front.local_addr()?)?;
    let (a, _) = front.accept()?;
    let b = TcpStream::connect(back.local_addr()?)?;
    let (server, _) = back.accept()?;
    Ok((client, a, b, server))
}

/// One direction of a splice relay (blocking), then half-close.
fn splice_direction(from: TcpStream, to: TcpStream) {
    let Ok((pipe_r, pipe_w)) = nix::unistd::pipe() else {
        return;
    };
    let _ = fcntl(pipe_w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    let flags = SpliceFFlags::SPLICE_F_MOVE;
    'outer: loop {
        let n = match splice(from.as_fd(), None, pipe_w.as_fd(), None, CHUNK, flags) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut left = n;
        while left > 0 {
            match splice(pipe_r.as_fd(), None, to.as_fd(), None, left, flags) {
                Ok(0) | Err(_) => break 'outer,
                Ok(m) => left -= m,
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// One direction of a sockmap relay: wait for EOF (the socket polls
/// readable once the peer half-closed; the redirected bytes never wake it),
/// then for every redirected byte to be queued on `to`, then half-close it.
fn sockmap_direction(map: &SockmapRedirect, mut from: TcpStream, to: TcpStream) {
    let base = tcp_bytes_queued(&to).unwrap_or(0);
    if from.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => panic!("{n} bytes were passed to user space instead of redirected"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
    // Give up when `to` makes no progress for two seconds (its peer is gone).
    let (mut last, mut since) = (0u64, Instant::now());
    while let (Ok(moved), Ok(queued)) = (map.redirected(from.as_fd()), tcp_bytes_queued(&to)) {
        if queued - base >= moved || since.elapsed() > Duration::from_secs(2) {
            break;
        }
        if queued != last {
            (last, since) = (queued, Instant::now());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn start_relay(
    path: Path,
    map: &'static SockmapRedirect,
    a: &TcpStream,
    b: &TcpStream,
) -> Vec<std::thread::JoinHandle<()>> {
    let pair = |x: &TcpStream, y: &TcpStream| (x.try_clone().unwrap(), y.try_clone().unwrap());
    let (a1, b1) = pair(a, b);
    let (b2, a2) = pair(b, a);
    match path {
        Path::Direct => Vec::new(),
        Path::Splice => vec![
            std::thread::spawn(move || splice_direction(a1, b1)),
            std::thread::spawn(move || splice_direction(b2, a2)),
        ],
        Path::Sockmap => {
            map.pair(a.as_fd(), b.as_fd()).expect("pair");
            vec![
                std::thread::spawn(move || sockmap_direction(map, a1, b1)),
                std::thread::spawn(move || sockmap_direction(map, b2, a2)),
            ]
        }
    }
}

/// Busy seconds of the whole machine (user, nice, system, irq, softirq).
fn machine_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    [0, 1, 2, 5, 6]
        .iter()
        .map(|i| fields.get(*i).copied().unwrap_or(0.0))
        .sum::<f64>()
        / 100.0
}

/// Sends `total` bytes client -> server; (GiB/s, machine CPU-s/GiB).
fn bulk(path: Path, map: &'static SockmapRedirect, total: u64) -> io::Result<(f64, f64)> {
    let (client, a, b, server) = topology()?;
    // Direct: the client's own connection (client -> a), no relay.
    let (mut writer, mut reader) = if path == Path::Direct {
        (client, a.try_clone()?)
    } else {
        (client, server.try_clone()?)
    };
    let relay = if path == Path::Direct {
        Vec::new()
    } else {
        start_relay(path, map, &a, &b)
    };
    let cpu = machine_cpu();
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> io::Result<TcpStream> {
        let chunk = vec![7u8; CHUNK];
        let mut sent = 0u64;
        while sent < total {
            writer.write_all(&chunk)?;
            sent += CHUNK as u64;
        }
        writer.shutdown(Shutdown::Write)?;
        Ok(writer)
    });
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = machine_cpu() - cpu;
    let writer = sender.join().expect("sender")?;
    assert_eq!(got, total, "{}: bytes lost", path.name());
    drop((writer, reader));
    server.shutdown(Shutdown::Both).ok();
    drop((server, a, b));
    for t in relay {
        let _ = t.join();
    }
    let gib = total as f64 / f64::from(1u32 << 30);
    Ok((gib / seconds, cpu / gib))
}

/// The server never reads: how much the client can push.
fn stalled(path: Path, map: &'static SockmapRedirect, cap: u64) -> io::Result<u64> {
    let (client, a, b, server) = topology()?;
    let relay = start_relay(path, map, &a, &b);
    client.set_nonblocking(true)?;
    let chunk = vec![1u8; CHUNK];
    let (mut sent, mut progress) = (0u64, Instant::now());
    while sent < cap && progress.elapsed() < Duration::from_secs(2) {
        match (&client).write(&chunk) {
            Ok(n) => {
                sent += n as u64;
                progress = Instant::now();
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    drop(client);
    server.shutdown(Shutdown::Both).ok();
    drop((server, a, b));
    for t in relay {
        let _ = t.join();
    }
    Ok(sent)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let gib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let map: &'static SockmapRedirect = Box::leak(Box::new(SockmapRedirect::load()?));
    let paths = [Path::Direct, Path::Splice, Path::Sockmap];
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); paths.len()];
    for round in 0..rounds {
        for (i, path) in paths.iter().enumerate() {
            let (rate, cpu) = bulk(*path, map, gib << 30)?;
            println!(
                "round {round} {:8} {rate:5.2} GiB/s {cpu:5.3} machine CPU-s/GiB",
                path.name()
            );
            results[i].0.push(rate);
            results[i].1.push(cpu);
        }
    }
    let direct = median(results[0].0.clone());
    for (i, path) in paths.iter().enumerate() {
        let rate = median(results[i].0.clone());
        println!(
            "median   {:8} {rate:5.2} GiB/s ({:.2}x direct) {:5.3} machine CPU-s/GiB",
            path.name(),
            rate / direct,
            median(results[i].1.clone())
        );
    }
    let cap = 1u64 << 30;
    for path in [Path::Splice, Path::Sockmap] {
        let sent = stalled(path, map, cap)?;
        println!(
            "stalled  {:8} the client pushed {:7.1} MiB into a relay whose receiver does not read{}",
            path.name(),
            sent as f64 / 1_048_576.0,
            if sent >= cap { " (stopped at the cap)" } else { "" }
        );
    }
    Ok(())
}
