//! The checks of the sections: overlaps, the order of their tokens, and their leases.

use std::collections::BTreeMap;

use super::{Admits, LeaseLife, Section, Violation};

/// Every violation the sections show, sorting them by start.
pub(super) fn check(
    admits: Admits,
    sections: &mut [Section],
    leases: &BTreeMap<u64, LeaseLife>,
) -> Vec<Violation> {
    sections.sort_by_key(|s| (s.start, s.end, s.token));
    let mut violations = overlaps(admits, sections);
    violations.extend(token_order(admits, sections));
    violations.extend(sections.iter().filter_map(|s| within_lease(s, leases)));
    violations
}

/// How many sections may run at once, and whether `section` must run alone.
fn alone(admits: Admits, section: &Section) -> bool {
    match admits {
        Admits::Mutex => true,
        Admits::Semaphore(_) => false,
        Admits::ReadWrite => !section.shared,
    }
}

/// Sections that run together where the lock keeps them apart: a sweep over the sections in
/// the order they start, keeping those still running (a section that ends when another
/// starts does not overlap it).
fn overlaps(admits: Admits, sections: &[Section]) -> Vec<Violation> {
    let capacity = match admits {
        Admits::Semaphore(max) => usize::try_from(max).unwrap_or(usize::MAX),
        Admits::Mutex | Admits::ReadWrite => usize::MAX,
    };
    let mut violations = Vec::new();
    let mut running: Vec<&Section> = Vec::new();
    for section in sections {
        running.retain(|r| r.end > section.start);
        let clash = running
            .iter()
            .copied()
            .find(|r| alone(admits, r) || alone(admits, section))
            .or_else(|| (running.len() >= capacity).then(|| running[0]));
        if let Some(first) = clash {
            violations.push(Violation::Overlap {
                first: first.clone(),
                second: section.clone(),
            });
        }
        running.push(section);
    }
    violations
}

/// Tokens out of order with the sections' starts: each section that must run alone has a
/// token above those of every section that started before it, and below those of every
/// section that started after (for a mutex: tokens strictly increase); every token is one
/// acquisition's, so no two sections share one.
fn token_order(admits: Admits, sections: &[Section]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut by_token: BTreeMap<u64, &Section> = BTreeMap::new();
    for section in sections {
        if let Some(earlier) = by_token.insert(section.token, section) {
            violations.push(Violation::TokenOrder {
                earlier: earlier.clone(),
                later: section.clone(),
            });
        }
    }
    // The section with the highest token so far, before each section.
    let mut highest: Option<&Section> = None;
    let mut last_alone: Option<&Section> = None;
    for section in sections {
        let before_alone = last_alone.filter(|a| a.token >= section.token);
        let before_any = highest.filter(|h| alone(admits, section) && h.token >= section.token);
        if let Some(earlier) = before_any.or(before_alone) {
            violations.push(Violation::TokenOrder {
                earlier: earlier.clone(),
                later: section.clone(),
            });
        }
        if highest.is_none_or(|h| section.token > h.token) {
            highest = Some(section);
        }
        if alone(admits, section) {
            last_alone = Some(section);
        }
    }
    violations
}

/// Whether `section` ran within the lease committed with its token.
fn within_lease(section: &Section, leases: &BTreeMap<u64, LeaseLife>) -> Option<Violation> {
    let outside = |why: String| {
        Some(Violation::OutsideLease {
            section: section.clone(),
            why,
        })
    };
    let Some(lease) = leases.get(&section.token) else {
        return outside("no committed lease has its token".to_owned());
    };
    if lease.holder != section.holder {
        return outside(format!("the lease with its token is {}'s", lease.holder));
    }
    if section.start < lease.from {
        return outside(format!(
            "it started before its lease was committed at {}",
            lease.from.to_rfc3339()
        ));
    }
    let ended = lease.removed.map_or(lease.until, |r| r.min(lease.until));
    if section.end > ended {
        return outside(format!(
            "it ended after its lease did at {}",
            ended.to_rfc3339()
        ));
    }
    None
}
