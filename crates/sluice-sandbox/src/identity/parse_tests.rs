use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const V4_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
const V6_HEADER: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

#[test]
fn hex_socket_addr_table() {
    use WordOrder::{Big, Little};
    let cases: &[(&str, WordOrder, Option<&str>)] = &[
        ("0100007F:1F90", Little, Some("127.0.0.1:8080")),
        ("7F000001:1F90", Big, Some("127.0.0.1:8080")),
        ("00000000:0000", Little, Some("0.0.0.0:0")),
        ("0200C80A:0C38", Little, Some("10.200.0.2:3128")),
        (
            "00000000000000000000000001000000:0035",
            Little,
            Some("[::1]:53"),
        ),
        (
            "00000000000000000000000000000001:0035",
            Big,
            Some("[::1]:53"),
        ),
        (
            "0000000000000000FFFF00000100007F:D431",
            Little,
            Some("[::ffff:127.0.0.1]:54321"),
        ),
        (
            "00000000000000000000FFFF7F000001:D431",
            Big,
            Some("[::ffff:127.0.0.1]:54321"),
        ),
        (
            "B80D0120000000000000000001000000:01BB",
            Little,
            Some("[2001:db8::1]:443"),
        ),
        // malformed
        ("0100007F", Little, None),
        ("0100007F:1F9", Little, None),
        ("0100007F:1F900", Little, None),
        ("100007F:1F90", Little, None),
        ("+100007F:1F90", Little, None),
        ("0100007G:1F90", Little, None),
        ("0000000000000000FFFF00000100007:0035", Little, None),
        ("", Little, None),
    ];
    for (input, order, want) in cases {
        let got = parse_hex_socket_addr(input, *order);
        assert_eq!(got, want.map(sa), "input {input:?} order {order:?}");
    }
}

/// (local, remote, state, inode)
type Row = (&'static str, &'static str, u8, u64);

#[test]
fn tcp_line_table() {
    let cases: &[(&str, Option<Row>)] = &[
        (
            "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 620 1 00000000b1be553e 100 0 0 10 0",
            Some(("0.0.0.0:2024", "0.0.0.0:0", 0x0A, 620)),
        ),
        (
            "  12: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 98765 1 0000000000000000 20 4 30 10 -1",
            Some(("127.0.0.1:54321", "127.0.0.1:8080", 0x01, 98765)),
        ),
        (
            "   3: 0000000000000000FFFF00000100007F:D431 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1",
            Some(("[::ffff:127.0.0.1]:54321", "[::ffff:127.0.0.1]:8080", 0x01, 4242)),
        ),
        (
            "   4: 00000000000000000000000001000000:A000 00000000000000000000000001000000:0C38 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0000000000000000",
            Some(("[::1]:40960", "[::1]:3128", 0x06, 0)),
        ),
        // malformed rows
        ("   0 0100007F:D431 0100007F:1F90 01 0:0 0:0 0 0 0 5", None),
        ("   0: 0100007F:D431 0100007F:1F90 1 0:0 0:0 0 0 0 5", None),
        ("   0: 0100007F:D431 0100007F:1F90 01 0:0 0:0 0 0 0", None),
        ("   0: 0100007F:D431 0100007F:1F90 01 0:0 0:0 0 0 0 -5", None),
        ("   0: 0100007F:D431 zz:1F90 01 0:0 0:0 0 0 0 5", None),
        ("", None),
    ];
    for (line, want) in cases {
        let got = parse_tcp_line(line, WordOrder::Little);
        let want = want.map(|(l, r, state, inode)| TcpEntry {
            local: sa(l),
            remote: sa(r),
            state,
            inode,
        });
        assert_eq!(got, want, "line {line:?}");
    }
}

#[test]
fn find_inode_ipv4() {
    let table = format!(
        "{V4_HEADER}\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 200 1 0 20 4 30 10 -1\n\
   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 300 1 0 20 4 30 10 -1\n"
    );
    let peer = sa("127.0.0.1:54321");
    let local = sa("127.0.0.1:8080");
    assert_eq!(
        find_established_inode(&table, WordOrder::Little, peer, local),
        Ok(Some(300))
    );
    // Reversed direction finds the proxy's own accepted socket instead.
    assert_eq!(
        find_established_inode(&table, WordOrder::Little, local, peer),
        Ok(Some(200))
    );
    // A peer seen through a dual-stack listener (IPv4-mapped) still matches an IPv4 row.
    assert_eq!(
        find_established_inode(
            &table,
            WordOrder::Little,
            sa("[::ffff:127.0.0.1]:54321"),
            sa("[::ffff:127.0.0.1]:8080")
        ),
        Ok(Some(300))
    );
    assert_eq!(
        find_established_inode(&table, WordOrder::Little, sa("127.0.0.1:1"), local),
        Ok(None)
    );
}

#[test]
fn find_inode_ipv6_and_mapped() {
    let table = format!(
        "{V6_HEADER}\n\
   0: 0000000000000000FFFF00000100007F:D431 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 20 4 30 10 -1\n\
   1: 00000000000000000000000001000000:A000 00000000000000000000000001000000:0C38 01 00000000:00000000 00:00000000 00000000     0        0 5151 1 0 20 4 30 10 -1\n\
   2: 00000000000000000000000001000000:A001 00000000000000000000000001000000:0C38 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0\n"
    );
    // Plain IPv4 addresses (as seen by an IPv4 listener) match a mapped tcp6 row.
    assert_eq!(
        find_established_inode(
            &table,
            WordOrder::Little,
            sa("127.0.0.1:54321"),
            sa("127.0.0.1:8080")
        ),
        Ok(Some(4242))
    );
    assert_eq!(
        find_established_inode(
            &table,
            WordOrder::Little,
            sa("[::1]:40960"),
            sa("[::1]:3128")
        ),
        Ok(Some(5151))
    );
    // TIME_WAIT rows (state 06, inode 0) never match.
    assert_eq!(
        find_established_inode(
            &table,
            WordOrder::Little,
            sa("[::1]:40961"),
            sa("[::1]:3128")
        ),
        Ok(None)
    );
}

#[test]
fn find_inode_skips_inode_zero_and_non_established() {
    let table = "\
   0: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0\n\
   1: 0100007F:D431 0100007F:1F90 02 00000000:00000000 00:00000000 00000000     0        0 77 1 0\n";
    assert_eq!(
        find_established_inode(
            table,
            WordOrder::Little,
            sa("127.0.0.1:54321"),
            sa("127.0.0.1:8080")
        ),
        Ok(None)
    );
}

#[test]
fn find_inode_reports_malformed_line_number() {
    let table = format!(
        "{V4_HEADER}\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0\n\
   1: garbage\n"
    );
    assert_eq!(
        find_established_inode(
            &table,
            WordOrder::Little,
            sa("127.0.0.1:1"),
            sa("127.0.0.1:2")
        ),
        Err(3)
    );
}

#[test]
fn ppid_table() {
    let cases: &[(&str, Option<u32>)] = &[
        ("Name:\tcurl\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nNgid:\t0\nPid:\t42\nPPid:\t7\nTracerPid:\t0\n", Some(7)),
        ("Name:\tinit\nPPid:\t0\n", Some(0)),
        ("PPid:   123   \n", Some(123)),
        ("Name:\tx\nPid:\t5\n", None),
        ("PPid:\t-1\n", None),
        ("PPid:\tabc\n", None),
        ("PPid:\t99999999999\n", None),
        // The kernel escapes newlines in Name, but a tracer-like "PPid" line later must not win.
        ("Name:\tx\\nPPid:\t9\nPPid:\t3\n", Some(3)),
        ("", None),
    ];
    for (status, want) in cases {
        assert_eq!(parse_ppid(status), *want, "status {status:?}");
    }
}

#[test]
fn stat_ppid_table() {
    let cases: &[(&str, Option<u32>)] = &[
        ("42 (curl) S 7 42 42 0 -1 4194560 105 0 0 0\n", Some(7)),
        ("1 (systemd) S 0 1 1 0 -1\n", Some(0)),
        // A comm with spaces and parentheses: the fields follow the last `)`.
        ("9 (a) b) c) R 3 9 9\n", Some(3)),
        ("9 (x (S 1 2)) S 5 9\n", Some(5)),
        ("9 (x) S -1 9\n", None),
        ("9 (x) S\n", None),
        ("9 x S 3\n", None),
        ("", None),
    ];
    for (stat, want) in cases {
        assert_eq!(parse_stat_ppid(stat), *want, "stat {stat:?}");
    }
}

#[test]
fn socket_inode_table() {
    let cases: &[(&str, Option<u64>)] = &[
        ("socket:[12345]", Some(12345)),
        ("socket:[0]", Some(0)),
        ("socket:[]", None),
        ("socket:[12a]", None),
        ("socket:[+12]", None),
        ("socket:12345", None),
        ("pipe:[12345]", None),
        ("anon_inode:[eventfd]", None),
        ("/dev/null", None),
    ];
    for (link, want) in cases {
        assert_eq!(parse_socket_inode(link), *want, "link {link:?}");
    }
}

#[test]
fn pid_list_table() {
    assert_eq!(parse_pid_list("12 34 56 "), vec![12, 34, 56]);
    assert_eq!(parse_pid_list(""), Vec::<u32>::new());
    assert_eq!(parse_pid_list("7\n8 x 9"), vec![7, 8, 9]);
}

#[test]
fn cmdline_split_table() {
    let cases: &[(&[u8], &[&str])] = &[
        (
            b"/usr/bin/python3\0/opt/app/main.py\0--flag\0",
            &["/usr/bin/python3", "/opt/app/main.py", "--flag"],
        ),
        (b"sleep\x005", &["sleep", "5"]),
        (b"a\0\0b\0", &["a", "", "b"]),
        (b"", &[]),
        (b"\0", &[]),
        (b"bad\xff\0", &["bad\u{fffd}"]),
    ];
    for (raw, want) in cases {
        assert_eq!(split_cmdline(raw), *want, "raw {raw:?}");
    }
}

#[test]
fn cmdline_abs_paths_excludes_known_exes() {
    let raw = b"/usr/bin/python3\0/opt/app/main.py\0relative/x\0/opt/app/main.py\0--out=/tmp/x\0/bin/sh\0";
    assert_eq!(
        cmdline_abs_paths(raw, &["/usr/bin/python3", "/bin/sh"]),
        vec!["/opt/app/main.py".to_owned()]
    );
    let many: Vec<u8> = (0..200)
        .flat_map(|i| format!("/p/{i}\0").into_bytes())
        .collect();
    assert_eq!(cmdline_abs_paths(&many, &[]).len(), MAX_CMDLINE_PATHS);
}

#[test]
fn deleted_suffix_table() {
    let cases: &[(&str, bool, &str)] = &[
        ("/usr/bin/curl (deleted)", false, "/usr/bin/curl"),
        ("/usr/bin/curl (deleted)", true, "/usr/bin/curl (deleted)"),
        ("/usr/bin/curl", false, "/usr/bin/curl"),
        ("/tmp/x (deleted) (deleted)", false, "/tmp/x (deleted)"),
        ("/tmp/(deleted)", false, "/tmp/(deleted)"),
    ];
    for (link, literal, want) in cases {
        assert_eq!(strip_deleted_suffix(link, *literal), *want, "link {link:?}");
    }
}

#[test]
fn hex_encoding() {
    assert_eq!(to_hex(&[]), "");
    assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
}
