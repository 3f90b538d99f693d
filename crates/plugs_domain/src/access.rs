//! Who may reach an event and its media.

use crate::{DomainError, Event, UserId};

/// What a caller wants to do with an event or its media. Today every access follows the same
/// rule (the owner only); naming the access at each call site keeps the place to change ready
/// for the day they differ, for example shared read access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Access {
    /// See the event, list or fetch its media, download or stream bytes, get a presigned URL.
    Read,
    /// Add media to the event, edit the event's title or a media's fields.
    Write,
    /// Delete the event or one of its media.
    Delete,
}

impl Access {
    /// Allows `user` this access to `event`, or answers [`DomainError::NotOwner`].
    pub fn authorize(self, event: &Event, user: &UserId) -> Result<(), DomainError> {
        match self {
            Self::Read | Self::Write | Self::Delete => authorize(event, user),
        }
    }
}

/// The ownership rule: a user reaches only the events they own.
///
/// Callers must answer [`DomainError::NotOwner`] exactly as they answer a missing event, so that
/// nobody can learn which event ids exist.
///
/// ```
/// use plugs_domain::{authorize, DomainError, Event, EventId, UserId};
/// let alice = UserId::parse("alice").unwrap();
/// let now = chrono::Utc::now();
/// let event = Event { id: EventId::new(), title: "Picnic".into(), owner: alice.clone(), created_at: now, updated_at: now };
/// assert_eq!(authorize(&event, &alice), Ok(()));
/// assert_eq!(authorize(&event, &UserId::parse("bob").unwrap()), Err(DomainError::NotOwner));
/// ```
pub fn authorize(event: &Event, user: &UserId) -> Result<(), DomainError> {
    if &event.owner == user {
        Ok(())
    } else {
        Err(DomainError::NotOwner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventId;

    fn event_of(owner: &str) -> Event {
        Event {
            id: EventId::new(),
            title: "t".into(),
            owner: UserId::parse(owner).unwrap(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn only_the_owner_gets_any_access() {
        let event = event_of("alice");
        let alice = UserId::parse("alice").unwrap();
        for access in [Access::Read, Access::Write, Access::Delete] {
            assert_eq!(access.authorize(&event, &alice), Ok(()));
            for other in ["bob", "Alice", "alice ", "alic"] {
                let other = UserId::parse(other).unwrap();
                assert_eq!(
                    access.authorize(&event, &other),
                    Err(DomainError::NotOwner),
                    "{access:?} {other}"
                );
            }
        }
    }
}
