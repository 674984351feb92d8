//! The pure parts of the copy: the order tables go in, and the canonical
//! form rows are compared in (the same on both databases).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Int,
    Bool,
    Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Text(String),
    Int(i64),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// A multiset checksum: the sum of the rows' digests, so that the order
/// each database returns rows in (collations differ) does not matter.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) rows: u64,
    pub(super) sum: u128,
}

impl Tally {
    pub(super) fn add(&mut self, row: &[Value]) {
        let mut digest = Sha256::new();
        for value in row {
            // The canonical text form: a tag, then the value; lengths make it unambiguous.
            match value {
                Value::Null => digest.update(b"N;"),
                Value::Text(s) => digest.update(format!("T{}:{s};", s.len()).as_bytes()),
                Value::Int(n) => digest.update(format!("I{n};").as_bytes()),
                Value::Bool(b) => digest.update(if *b { b"Bt;" } else { b"Bf;" }),
                Value::Bytes(b) => digest.update(format!("X{};", hex::encode(b)).as_bytes()),
            }
        }
        let bytes: [u8; 32] = digest.finalize().into();
        let mut head = [0u8; 16];
        head.copy_from_slice(&bytes[..16]);
        self.sum = self.sum.wrapping_add(u128::from_be_bytes(head));
        self.rows += 1;
    }

    pub(super) fn checksum(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// Every table once, each after the tables its foreign keys point to
/// (alphabetical among those ready at once, so the order is stable).
/// A cycle, or a table referencing itself, is refused: its rows would need
/// an order of their own.
pub(crate) fn dependency_order(
    tables: &BTreeSet<String>,
    edges: &[(String, String)],
) -> std::result::Result<Vec<String>, String> {
    let mut parents: BTreeMap<&str, BTreeSet<&str>> = tables.iter().map(|t| (t.as_str(), BTreeSet::new())).collect();
    for (child, parent) in edges {
        if child == parent {
            return Err(format!("table {child} references itself; copy can't order its rows"));
        }
        if let (Some(set), true) = (parents.get_mut(child.as_str()), tables.contains(parent)) {
            set.insert(parent.as_str());
        }
    }
    let mut order: Vec<String> = Vec::with_capacity(tables.len());
    while order.len() < tables.len() {
        let ready: Vec<&str> = parents
            .iter()
            .filter(|(table, deps)| {
                !order.iter().any(|o| o == *table) && deps.iter().all(|d| order.iter().any(|o| o == d))
            })
            .map(|(table, _)| *table)
            .collect();
        if ready.is_empty() {
            let left: Vec<&str> = parents.keys().copied().filter(|t| !order.iter().any(|o| o == t)).collect();
            return Err(format!("the foreign keys between [{}] form a cycle; copy can't order them", left.join(", ")));
        }
        order.extend(ready.into_iter().map(str::to_owned));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn edge(child: &str, parent: &str) -> (String, String) {
        (child.to_owned(), parent.to_owned())
    }

    #[test]
    fn parents_come_before_children_and_every_table_once() {
        let tables = set(&["grants", "orgs", "resources", "users", "memberships", "loose"]);
        let edges = [
            edge("orgs", "users"),
            edge("memberships", "orgs"),
            edge("memberships", "users"),
            edge("resources", "orgs"),
            edge("grants", "resources"),
            edge("grants", "users"),
        ];
        let order = dependency_order(&tables, &edges).expect("an order");
        assert_eq!(order.len(), tables.len());
        let at = |t: &str| order.iter().position(|o| o == t).expect("listed");
        for (child, parent) in &edges {
            assert!(at(parent) < at(child), "{parent} before {child}: {order:?}");
        }
    }

    #[test]
    fn a_cycle_or_a_self_reference_is_refused_by_name() {
        let err = dependency_order(&set(&["a", "b", "c"]), &[edge("a", "b"), edge("b", "a")]).expect_err("cycle");
        assert!(err.contains("between [a, b] form a cycle"), "only the tables in the cycle: {err}");
        let err = dependency_order(&set(&["a"]), &[edge("a", "a")]).expect_err("self");
        assert!(err.contains("references itself"), "{err}");
    }

    #[test]
    fn the_checksum_ignores_row_order_and_sees_every_value() {
        let rows = [
            vec![Value::Text("a".into()), Value::Int(1), Value::Null],
            vec![Value::Text("b".into()), Value::Int(2), Value::Bool(true)],
        ];
        let (mut forward, mut backward) = (Tally::default(), Tally::default());
        rows.iter().for_each(|r| forward.add(r));
        rows.iter().rev().for_each(|r| backward.add(r));
        assert_eq!(forward.checksum(), backward.checksum());
        let mut changed = Tally::default();
        changed.add(&rows[0]);
        changed.add(&[Value::Text("b".into()), Value::Int(2), Value::Bool(false)]);
        assert_ne!(forward.checksum(), changed.checksum());
        // NULL is not the empty string, nor text its bytes.
        let (mut null, mut empty, mut bytes) = (Tally::default(), Tally::default(), Tally::default());
        null.add(&[Value::Null]);
        empty.add(&[Value::Text(String::new())]);
        bytes.add(&[Value::Bytes(Vec::new())]);
        assert_ne!(null.checksum(), empty.checksum());
        assert_ne!(empty.checksum(), bytes.checksum());
    }
}
