//! Conditions on a lock's state: for listing locks, and for forced takeover.

use serde::{Deserialize, Serialize};

use crate::info::LockInfo;

/// A condition on a lock, as Go lockheed's `Condition`, typed so that only meaningful
/// combinations can be built.
///
/// It serializes as JSON with one key per node (`{"tagsContain": "db"}`,
/// `{"and": [..]}`, `{"not": {..}}`), the form command lines take.
///
/// # Examples
///
/// ```
/// use lockheed::Condition;
///
/// // Held locks tagged "db" but not "keep".
/// let c = Condition::and([
///     Condition::acquired(true),
///     Condition::tags_contain("db"),
///     Condition::not(Condition::tags_contain("keep")),
/// ]);
/// let json = serde_json::to_string(&c).unwrap();
/// assert_eq!(
///     json,
///     r#"{"and":[{"acquired":true},{"tagsContain":"db"},{"not":{"tagsContain":"keep"}}]}"#
/// );
/// assert_eq!(serde_json::from_str::<Condition>(&json).unwrap(), c);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub enum Condition {
    /// The lock's tags include this tag (Go: `OperationContains` on `FieldTags`).
    TagsContain(String),
    /// The lock is held (`true`) or free (`false`) by a live lease.
    Acquired(bool),
    /// Every condition holds (an empty list always holds).
    And(Vec<Condition>),
    /// At least one condition holds (an empty list never holds).
    Or(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
}

impl Condition {
    /// The lock's tags include `tag`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::Condition;
    ///
    /// let c = Condition::tags_contain("db");
    /// assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"tagsContain":"db"}"#);
    /// ```
    #[must_use]
    pub fn tags_contain(tag: impl Into<String>) -> Self {
        Self::TagsContain(tag.into())
    }

    /// The lock is held (`true`) or free (`false`).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::Condition;
    ///
    /// let free = Condition::acquired(false);
    /// assert_eq!(serde_json::to_string(&free).unwrap(), r#"{"acquired":false}"#);
    /// ```
    #[must_use]
    pub fn acquired(held: bool) -> Self {
        Self::Acquired(held)
    }

    /// All of `conditions`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::Condition;
    ///
    /// // Held locks tagged "db".
    /// let c = Condition::and([Condition::acquired(true), Condition::tags_contain("db")]);
    /// assert_eq!(
    ///     serde_json::to_string(&c).unwrap(),
    ///     r#"{"and":[{"acquired":true},{"tagsContain":"db"}]}"#
    /// );
    /// ```
    #[must_use]
    pub fn and(conditions: impl IntoIterator<Item = Condition>) -> Self {
        Self::And(conditions.into_iter().collect())
    }

    /// Any of `conditions`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::Condition;
    ///
    /// // Locks tagged "db" or "cache".
    /// let c = Condition::or([Condition::tags_contain("db"), Condition::tags_contain("cache")]);
    /// assert_eq!(
    ///     serde_json::to_string(&c).unwrap(),
    ///     r#"{"or":[{"tagsContain":"db"},{"tagsContain":"cache"}]}"#
    /// );
    /// ```
    #[must_use]
    pub fn or(conditions: impl IntoIterator<Item = Condition>) -> Self {
        Self::Or(conditions.into_iter().collect())
    }

    /// Not `condition`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::Condition;
    ///
    /// // Locks not tagged "keep".
    /// let c = Condition::not(Condition::tags_contain("keep"));
    /// assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"not":{"tagsContain":"keep"}}"#);
    /// ```
    #[must_use]
    #[allow(clippy::should_implement_trait)] // A constructor, like `and`/`or`; `!` reads worse here.
    pub fn not(condition: Condition) -> Self {
        Self::Not(Box::new(condition))
    }

    /// Whether `lock` meets the condition.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Condition, Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("jobs", locker.clone()).with_tags(["db"]).try_acquire().await?;
    /// let info = locker.get("jobs").await?.expect("the lock is stored");
    /// let held_db = Condition::and([Condition::acquired(true), Condition::tags_contain("db")]);
    /// assert!(held_db.matches(&info));
    /// assert!(!Condition::tags_contain("web").matches(&info));
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn matches(&self, lock: &LockInfo) -> bool {
        match self {
            Self::TagsContain(tag) => lock.tags.iter().any(|t| t == tag),
            Self::Acquired(held) => lock.is_held() == *held,
            Self::And(all) => all.iter().all(|c| c.matches(lock)),
            Self::Or(any) => any.iter().any(|c| c.matches(lock)),
            Self::Not(inner) => !inner.matches(lock),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::Holder;

    fn lock(tags: &[&str], held: bool) -> LockInfo {
        LockInfo {
            name: "x".into(),
            kind: Some(crate::state::kind::LockKind::Mutex),
            holders: if held {
                vec![Holder::reserved("h", chrono::DateTime::UNIX_EPOCH)]
            } else {
                Vec::new()
            },
            max_holders: Some(1),
            waiters: Vec::new(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            fencing_token: 0,
        }
    }

    #[test]
    fn nested_conditions() {
        let c = Condition::or([
            Condition::and([Condition::acquired(true), Condition::tags_contain("db")]),
            Condition::not(Condition::acquired(true)),
        ]);
        assert!(c.matches(&lock(&["db"], true)));
        assert!(!c.matches(&lock(&["web"], true)));
        assert!(c.matches(&lock(&[], false)));
        assert!(Condition::and([]).matches(&lock(&[], false)));
        assert!(!Condition::or([]).matches(&lock(&[], false)));
    }

    #[test]
    fn json_form_rejects_unknown_shapes() {
        assert!(
            serde_json::from_str::<Condition>(r#"{"tagsContain":"a","acquired":true}"#).is_err()
        );
        assert!(serde_json::from_str::<Condition>(r#"{"field":"tags"}"#).is_err());
        let c: Condition = serde_json::from_str(r#"{"not":{"acquired":false}}"#).unwrap();
        assert_eq!(c, Condition::not(Condition::acquired(false)));
    }
}
