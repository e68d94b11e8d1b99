//! A set of IP prefixes (CIDRs) that answers "does it hold this address?" in O(log n): the
//! prefixes become sorted, merged, disjoint address ranges, one list per family, searched by
//! bisection. Built once per list (at config load or file change), never per request.

pub use crate::config::values::parse_prefix;
use ipnet::IpNet;
use std::net::IpAddr;

/// Address ranges, inclusive, sorted and disjoint (adjacent ones merged).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrefixSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl PrefixSet {
    pub fn new(prefixes: &[IpNet]) -> PrefixSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in prefixes {
            match net.trunc() {
                IpNet::V4(net) => v4.push((u32::from(net.network()), u32::from(net.broadcast()))),
                IpNet::V6(net) => v6.push((u128::from(net.network()), u128::from(net.broadcast()))),
            }
        }
        PrefixSet {
            v4: merged(v4),
            v6: merged(v6),
        }
    }

    /// Whether some prefix holds `ip`. An IPv4 address written as IPv6 (`::ffff:a.b.c.d`, as a
    /// dual-stack socket reports it) is looked up as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(ip) => holds(&self.v4, u32::from(ip)),
            IpAddr::V6(ip) => holds(&self.v6, u128::from(ip)),
        }
    }

    /// How many disjoint ranges the prefixes came to.
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

fn merged<T: Ord + Copy + Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            // Overlapping or adjacent: one range.
            Some(last) if last.1.successor().is_none_or(|next| start <= next) => {
                last.1 = last.1.max(end);
            }
            _ => out.push((start, end)),
        }
    }
    out
}

fn holds<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or below `x` is the only one that can hold it.
    let after = ranges.partition_point(|(start, _)| *start <= x);
    after > 0 && x <= ranges[after - 1].1
}

/// The next address, `None` past the last one.
trait Successor: Sized {
    fn successor(self) -> Option<Self>;
}

impl Successor for u32 {
    fn successor(self) -> Option<u32> {
        self.checked_add(1)
    }
}

impl Successor for u128 {
    fn successor(self) -> Option<u128> {
        self.checked_add(1)
    }
}

/// A list file: one prefix per line; blank lines and `#` comments are skipped. The first bad
/// line fails the whole file, with its number.
pub(crate) fn parse_list(text: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(parse_prefix(line).map_err(|e| format!("line {}: {e}", number + 1))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> PrefixSet {
        let nets: Vec<IpNet> = items.iter().map(|t| parse_prefix(t).unwrap()).collect();
        PrefixSet::new(&nets)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn boundaries_of_a_prefix_are_inside_and_neighbours_outside() {
        let s = set(&["10.1.2.0/24"]);
        assert!(s.contains(ip("10.1.2.0")));
        assert!(s.contains(ip("10.1.2.255")));
        assert!(!s.contains(ip("10.1.1.255")));
        assert!(!s.contains(ip("10.1.3.0")));
    }

    #[test]
    fn overlapping_and_adjacent_prefixes_merge() {
        let s = set(&["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5", "10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(s.ranges(), 2);
        assert!(s.contains(ip("10.255.255.255")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(s.contains(ip("192.168.200.1")));
        assert!(!s.contains(ip("172.16.0.1")));
    }

    #[test]
    fn families_are_apart_and_mapped_addresses_count_as_ipv4() {
        let s = set(&["127.0.0.1", "2001:db8::/32", "::/128"]);
        assert!(s.contains(ip("::ffff:127.0.0.1")));
        assert!(s.contains(ip("2001:db8:ffff::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        assert!(!s.contains(ip("0.0.0.0")));
        assert!(s.contains(ip("::")));
    }

    #[test]
    fn the_whole_space_and_its_last_address() {
        let s = set(&["0.0.0.0/0", "::/0"]);
        assert_eq!(s.ranges(), 2);
        assert!(s.contains(ip("255.255.255.255")));
        assert!(s.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        let empty = PrefixSet::new(&[]);
        assert!(!empty.contains(ip("1.2.3.4")));
    }

    #[test]
    fn host_bits_are_dropped_and_bad_prefixes_refused() {
        assert_eq!(parse_prefix("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_prefix(" 192.0.2.7 ").unwrap().to_string(), "192.0.2.7/32");
        for bad in ["10.0.0/8", "10.0.0.0/33", "::1/129", "host", "", "10.0.0.0/-1"] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_files_skip_comments_and_name_the_bad_line() {
        let ok = parse_list("# blocklist\n10.0.0.0/8  # office\n\n2001:db8::1\n").unwrap();
        assert_eq!(ok.len(), 2);
        let err = parse_list("10.0.0.0/8\n\nnot-an-ip\n").unwrap_err();
        assert!(err.starts_with("line 3: invalid prefix \"not-an-ip\""), "{err}");
    }
}
